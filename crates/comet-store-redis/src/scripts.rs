//! The Lua scripts (in `lua/`), each with the functions every one shares.

use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, loaded into Redis on first use (and again after a restart
/// of Redis: `Script` sends them on `NOSCRIPT`).
pub(crate) struct Scripts {
    pub(crate) open: Script,
    pub(crate) append: Script,
    pub(crate) read: Script,
    pub(crate) backlog: Script,
    pub(crate) summary: Script,
    pub(crate) channels: Script,
    pub(crate) sweep: Script,
    pub(crate) share: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}\n{body}"))
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            open: script(include_str!("lua/open.lua")),
            append: script(include_str!("lua/append.lua")),
            read: script(include_str!("lua/read.lua")),
            backlog: script(include_str!("lua/backlog.lua")),
            summary: script(include_str!("lua/summary.lua")),
            channels: script(include_str!("lua/channels.lua")),
            sweep: script(include_str!("lua/sweep.lua")),
            share: script(include_str!("lua/share.lua")),
        }
    }
}
