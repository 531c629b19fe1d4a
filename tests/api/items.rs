//! §1 and §6: the ground rules every route follows.
