// A new user's walk through larder with openapi-typescript's types and openapi-fetch.
//
// clients/check.sh generates generated/schema.d.ts from the running server's /openapi.json,
// compiles this file with `tsc --strict` (tsconfig.json) and runs it with node:
//
//     node dist/walkthrough.js BASE_URL ADMIN_EMAIL ADMIN_PASSWORD
//
// Every step asserts the status, the headers that matter and the typed body; the first
// failed step ends the run with a stack trace.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./generated/schema.js";

type Item = components["schemas"]["Item"];
type ItemInput = components["schemas"]["ItemInput"];
type ImportResult = components["schemas"]["ImportResult"];

/** A value that must be there: the body of a response whose status was checked. */
function present<T>(value: T | undefined, what: string): T {
    assert.ok(value !== undefined, `${what}: no body`);
    return value;
}

function header(response: Response, name: string): string {
    const value = response.headers.get(name);
    assert.ok(value !== null, `no ${name} header`);
    return value;
}

/** The OAuth2 password form, then a client that sends the bearer token. */
async function logIn(baseUrl: string, email: string, password: string): Promise<Client<paths>> {
    const anonymous = createClient<paths>({ baseUrl });
    const { data, response } = await anonymous.POST("/auth/token", {
        body: { username: email, password },
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
    });
    assert.equal(response.status, 200);
    assert.equal(header(response, "cache-control"), "no-store");
    const granted = present(data, "token");
    assert.equal(granted.token_type, "bearer");
    return createClient<paths>({
        baseUrl,
        headers: { Authorization: `Bearer ${granted.access_token}` },
    });
}

async function main(baseUrl: string, adminEmail: string, adminPassword: string): Promise<void> {
    const anonymous = createClient<paths>({ baseUrl });

    // Register, log in, see ourselves.
    const email = `ts-${randomUUID().slice(0, 12)}@example.com`;
    const password = "walk-through-password-1";
    const registered = await anonymous.POST("/users", {
        body: { email, password, full_name: "TypeScript Walker" },
    });
    assert.equal(registered.response.status, 201);
    const user = present(registered.data, "register");
    assert.equal(header(registered.response, "location"), `/users/${user.id}`);
    const client = await logIn(baseUrl, email, password);
    const meAnswer = await client.GET("/users/me");
    assert.equal(present(meAnswer.data, "me").email, email);

    // Create an item as the README shows it: only name and price.
    const jam: ItemInput = { name: "Strawberry jam", price: 4.5 };
    const created = await client.POST("/items", { body: jam });
    assert.equal(created.response.status, 201);
    const item: Item = present(created.data, "create");
    assert.equal(item.quantity, 0);
    assert.equal(item.owner_id, user.id);
    assert.equal(header(created.response, "location"), `/items/${item.id}`);
    const etag = header(created.response, "etag");
    const byId = { path: { item_id: item.id } };

    // A conditional read: the copy we hold is current.
    const notModified = await anonymous.GET("/items/{item_id}", {
        params: { ...byId, header: { "If-None-Match": etag } },
    });
    assert.equal(notModified.response.status, 304);
    assert.equal(header(notModified.response, "etag"), etag);
    const fresh = await anonymous.GET("/items/{item_id}", { params: byId });
    assert.equal(present(fresh.data, "get").name, "Strawberry jam");

    // Conditional writes: the current ETag wins, a stale one is refused with 412.
    const replaced = await client.PUT("/items/{item_id}", {
        params: { ...byId, header: { "If-Match": etag } },
        body: { name: "Apricot jam", price: 5, quantity: 2 },
    });
    assert.equal(replaced.response.status, 200);
    assert.equal(present(replaced.data, "put").version, item.version + 1);
    const newEtag = header(replaced.response, "etag");
    assert.notEqual(newEtag, etag);
    const stale = await client.PUT("/items/{item_id}", {
        params: { ...byId, header: { "If-Match": etag } },
        body: { name: "Plum jam", price: 1 },
    });
    assert.equal(stale.response.status, 412);
    assert.equal(present(stale.error, "412").status, 412);
    const patched = await client.PATCH("/items/{item_id}", {
        params: { ...byId, header: { "If-Match": newEtag } },
        body: { quantity: 7 },
        headers: { "Content-Type": "application/merge-patch+json" },
    });
    assert.equal(patched.response.status, 200);
    const patchedItem = present(patched.data, "patch");
    assert.equal(patchedItem.quantity, 7);
    assert.equal(patchedItem.name, "Apricot jam");

    // Idempotent creation: the same key twice is one item.
    const key = `ts-${randomUUID()}`;
    const once = { body: { name: "Honey", price: 8 }, params: { header: { "Idempotency-Key": key } } };
    const first = await client.POST("/items", once);
    const again = await client.POST("/items", once);
    assert.equal(first.response.status, 201);
    assert.equal(again.response.status, 201);
    assert.equal(present(again.data, "replay").id, present(first.data, "first").id);
    assert.equal(header(again.response, "etag"), header(first.response, "etag"));

    // An import job, polled until it ends: two rows created, one (a negative price) rejected.
    const accepted = await client.POST("/process", {
        body: {
            kind: "import_items",
            items: [
                { name: "Flour", price: 1.2 },
                { name: "Salt", price: -1 },
                { name: "Sugar", price: 0.9 },
            ],
        },
    });
    assert.equal(accepted.response.status, 202);
    const job = present(accepted.data, "process");
    assert.equal(header(accepted.response, "location"), `/jobs/${job.job_id}`);
    const deadline = Date.now() + 30_000;
    let view = present((await client.GET("/jobs/{job_id}", { params: { path: { job_id: job.job_id } } })).data, "job");
    while (view.status === "queued" || view.status === "running") {
        assert.ok(Date.now() < deadline, `the job is still ${view.status}`);
        await sleep(100);
        view = present((await client.GET("/jobs/{job_id}", { params: { path: { job_id: job.job_id } } })).data, "job");
    }
    assert.equal(view.status, "succeeded", view.error ?? undefined);
    assert.equal(view.progress.done, 3);
    assert.equal(view.progress.total, 3);
    const result: ImportResult = present(view.result ?? undefined, "result");
    assert.equal(result.created_count, 2);
    assert.equal(result.created.length, 2);
    assert.equal(result.rejected_count, 1);
    const rejected = present(result.rejected[0], "rejected row");
    assert.equal(rejected.index, 1);
    assert.deepEqual(present(rejected.errors[0], "error").loc, ["price"]);

    // Delete an item under If-Match.
    const current = await anonymous.GET("/items/{item_id}", { params: byId });
    const gone = await client.DELETE("/items/{item_id}", {
        params: { ...byId, header: { "If-Match": header(current.response, "etag") } },
    });
    assert.equal(gone.response.status, 204);
    assert.equal((await anonymous.GET("/items/{item_id}", { params: byId })).response.status, 404);

    // An admin deletes the user; their token no longer works.
    const admin = await logIn(baseUrl, adminEmail, adminPassword);
    const byUser = { params: { path: { user_id: user.id } } };
    assert.equal((await client.DELETE("/admin/users/{user_id}", byUser)).response.status, 403);
    const deleted = await admin.DELETE("/admin/users/{user_id}", byUser);
    assert.equal(deleted.response.status, 200);
    assert.equal(present(deleted.data, "delete user").deleted, true);
    assert.equal((await admin.GET("/users/{user_id}", byUser)).response.status, 404);
    assert.equal((await client.GET("/users/me")).response.status, 401);

    console.log("typescript walk-through: ok");
}

const [baseUrl, adminEmail, adminPassword] = process.argv.slice(2);
if (baseUrl === undefined || adminEmail === undefined || adminPassword === undefined) {
    console.error("usage: node dist/walkthrough.js BASE_URL ADMIN_EMAIL ADMIN_PASSWORD");
    process.exit(2);
}
await main(baseUrl, adminEmail, adminPassword);
