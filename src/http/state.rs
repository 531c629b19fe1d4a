//! The cheap-to-clone context every handler receives.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::mail::Mailer;
use crate::auth::token::Tokens;
use crate::config::Settings;
use crate::jobs::Queue;
use crate::limits::Limits;
use crate::store::Db;

pub struct AppContext {
    pub settings: Settings,
    pub db: Db,
    pub tokens: Tokens,
    pub limits: Limits,
    pub jobs: Queue,
    pub mailer: Mailer,
}

#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        AppState(Arc::new(context))
    }
}

impl Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}
