//! The command table: every RESP command Starling answers, its arity and the metadata that
//! `COMMAND` reports (what redis-cli and client libraries read at start-up).
//!
//! **Invariant:** `COMMANDS[i].kind as usize == i`, so a [`CommandKind`] doubles as the index of
//! its per-command metrics.

/// Every command Starling understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // The variants are the command names.
pub enum CommandKind {
    Ping,
    Echo,
    Auth,
    Select,
    Hello,
    Client,
    Command,
    Config,
    Get,
    Set,
    Del,
    Exists,
    Mget,
    Mset,
    Scan,
    Dbsize,
    Info,
    Quit,
}

/// One row of the command table.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Which command.
    pub kind: CommandKind,
    /// Redis convention: `n > 0` exactly n arguments (name included), `n < 0` at least `-n`.
    pub arity: i32,
    /// Flags as `COMMAND` reports them.
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: no keys).
    pub first_key: i32,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i32,
    /// Step between key arguments.
    pub key_step: i32,
}

const fn spec(
    name: &'static str,
    kind: CommandKind,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
) -> CommandSpec {
    CommandSpec {
        name,
        kind,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        key_step: keys.2,
    }
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);

/// The table, in [`CommandKind`] order.
pub const COMMANDS: &[CommandSpec] = &[
    spec("ping", CommandKind::Ping, -1, &["fast", "stale"], NO_KEYS),
    spec("echo", CommandKind::Echo, 2, &["fast"], NO_KEYS),
    spec(
        "auth",
        CommandKind::Auth,
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        NO_KEYS,
    ),
    spec(
        "select",
        CommandKind::Select,
        2,
        &["loading", "stale", "fast"],
        NO_KEYS,
    ),
    spec(
        "hello",
        CommandKind::Hello,
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        NO_KEYS,
    ),
    spec(
        "client",
        CommandKind::Client,
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
    ),
    spec(
        "command",
        CommandKind::Command,
        -1,
        &["random", "loading", "stale"],
        NO_KEYS,
    ),
    spec(
        "config",
        CommandKind::Config,
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
    ),
    spec("get", CommandKind::Get, 2, &["readonly", "fast"], (1, 1, 1)),
    spec(
        "set",
        CommandKind::Set,
        -3,
        &["write", "denyoom"],
        (1, 1, 1),
    ),
    spec("del", CommandKind::Del, -2, &["write"], (1, -1, 1)),
    spec(
        "exists",
        CommandKind::Exists,
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
    ),
    spec(
        "mget",
        CommandKind::Mget,
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
    ),
    spec(
        "mset",
        CommandKind::Mset,
        -3,
        &["write", "denyoom"],
        (1, -1, 2),
    ),
    spec(
        "scan",
        CommandKind::Scan,
        -2,
        &["readonly", "random"],
        NO_KEYS,
    ),
    spec(
        "dbsize",
        CommandKind::Dbsize,
        1,
        &["readonly", "fast"],
        NO_KEYS,
    ),
    spec(
        "info",
        CommandKind::Info,
        -1,
        &["random", "loading", "stale"],
        NO_KEYS,
    ),
    spec("quit", CommandKind::Quit, -1, &["fast", "no_auth"], NO_KEYS),
];

/// Number of commands (the size of per-command metric arrays).
pub const COMMAND_COUNT: usize = COMMANDS.len();

/// Finds a command by name, ignoring ASCII case.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|spec| {
        spec.name.len() == name.len() && spec.name.as_bytes().eq_ignore_ascii_case(name)
    })
}

impl CommandSpec {
    /// Whether `argc` arguments (command name included) satisfy the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// Whether the command may run before AUTH.
    pub fn allowed_without_auth(&self) -> bool {
        self.flags.contains(&"no_auth")
    }
}

impl CommandKind {
    /// The table row of this command.
    pub fn spec(self) -> &'static CommandSpec {
        &COMMANDS[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_kind() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(spec.kind as usize, i, "{}", spec.name);
            assert_eq!(spec.kind.spec().name, spec.name);
        }
    }

    #[test]
    fn lookup_ignores_case_and_checks_arity() {
        let get = lookup(b"gEt").expect("GET exists");
        assert_eq!(get.kind, CommandKind::Get);
        assert!(get.arity_ok(2) && !get.arity_ok(3));
        let set = lookup(b"SET").expect("SET exists");
        assert!(set.arity_ok(3) && set.arity_ok(5) && !set.arity_ok(2));
        assert!(lookup(b"FLUSHALL").is_none());
        assert!(lookup(b"AUTH").expect("AUTH exists").allowed_without_auth());
        assert!(!lookup(b"GET").expect("GET exists").allowed_without_auth());
    }
}
