//! Per-connection state and the commands that only touch it: PING, ECHO, AUTH, SELECT, HELLO,
//! CLIENT, COMMAND, CONFIG, QUIT.
//!
//! **Invariant:** `authenticated` is true only after a correct password (or when the node has
//! none); SCAN cursors live here, at most [`CURSORS_MAX`] of them, so a client cannot grow them.

use std::collections::VecDeque;

use crate::api::command::{COMMANDS, CommandKind, CommandSpec};
use crate::api::resp;
use crate::runtime::shard::Shard;

/// Most SCAN cursors kept per connection (the oldest is forgotten first).
pub const CURSORS_MAX: usize = 64;

/// Where a SCAN continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Shard being scanned.
    pub shard: usize,
    /// Last key returned on that shard.
    pub after: Option<Vec<u8>>,
}

/// One client connection's state.
pub struct Session {
    /// Connection id (node-unique: shard index in the low bits).
    pub id: u64,
    /// Peer address, for CLIENT INFO.
    pub peer: String,
    /// Whether AUTH succeeded (or no password is configured).
    pub authenticated: bool,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
    /// QUIT was received: reply, then close.
    pub quit: bool,
    cursors: VecDeque<(u64, Cursor)>,
    next_cursor: u64,
}

impl Session {
    /// A new connection's state.
    pub fn new(id: u64, peer: String, password_required: bool) -> Self {
        Session {
            id,
            peer,
            authenticated: !password_required,
            name: None,
            quit: false,
            cursors: VecDeque::new(),
            next_cursor: 1,
        }
    }

    /// Remembers a cursor and returns its number for the client.
    pub fn save_cursor(&mut self, cursor: Cursor) -> u64 {
        if self.cursors.len() >= CURSORS_MAX {
            self.cursors.pop_front();
        }
        let id = self.next_cursor;
        self.next_cursor += 1;
        self.cursors.push_back((id, cursor));
        id
    }

    /// The cursor with that number (consumed).
    pub fn take_cursor(&mut self, id: u64) -> Option<Cursor> {
        let position = self.cursors.iter().position(|(c, _)| *c == id)?;
        self.cursors.remove(position).map(|(_, cursor)| cursor)
    }

    /// Executes a command that needs no storage.
    pub fn run_connection_command(
        &mut self,
        shard: &Shard,
        spec: &CommandSpec,
        argv: &[&[u8]],
        out: &mut Vec<u8>,
    ) {
        match spec.kind {
            CommandKind::Ping => match argv.get(1) {
                Some(message) if argv.len() == 2 => resp::bulk(out, message),
                Some(_) => resp::error(out, "ERR wrong number of arguments for 'ping' command"),
                None => resp::simple(out, "PONG"),
            },
            CommandKind::Echo => resp::bulk(out, argv[1]),
            CommandKind::Auth => self.auth(shard, &argv[1..], out),
            CommandKind::Select => match argv[1] {
                b"0" => resp::ok(out),
                _ => resp::error(out, "ERR DB index is out of range"),
            },
            CommandKind::Hello => self.hello(shard, argv, out),
            CommandKind::Client => self.client(argv, out),
            CommandKind::Command => command_command(argv, out),
            CommandKind::Config => config_command(shard, argv, out),
            CommandKind::Quit => {
                self.quit = true;
                resp::ok(out);
            }
            other => unreachable!("{other:?} is not a connection command"),
        }
    }

    /// AUTH password | AUTH default password.
    fn auth(&mut self, shard: &Shard, args: &[&[u8]], out: &mut Vec<u8>) {
        let Some(password) = shard.config.password.as_deref() else {
            resp::error(
                out,
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            );
            return;
        };
        let (user, given) = match args {
            [given] => (&b"default"[..], *given),
            [user, given] => (*user, *given),
            _ => {
                resp::error(out, "ERR syntax error");
                return;
            }
        };
        if user == b"default" && constant_time_eq(given, password.as_bytes()) {
            self.authenticated = true;
            resp::ok(out);
        } else {
            resp::error(
                out,
                "WRONGPASS invalid username-password pair or user is disabled.",
            );
        }
    }

    /// HELLO [2 [AUTH user pass] [SETNAME name]]: only RESP2.
    fn hello(&mut self, shard: &Shard, argv: &[&[u8]], out: &mut Vec<u8>) {
        if let Some(version) = argv.get(1)
            && *version != b"2"
        {
            resp::error(out, "NOPROTO sorry, this protocol version is not supported");
            return;
        }
        let mut i = 2;
        while i < argv.len() {
            match argv[i].to_ascii_uppercase().as_slice() {
                b"AUTH" if i + 2 < argv.len() => {
                    let mut reply = Vec::new();
                    self.auth(shard, &argv[i + 1..i + 3], &mut reply);
                    if reply.first() == Some(&b'-') {
                        out.extend_from_slice(&reply);
                        return;
                    }
                    i += 3;
                }
                b"SETNAME" if i + 1 < argv.len() => {
                    self.name = Some(argv[i + 1].to_vec());
                    i += 2;
                }
                _ => {
                    resp::error(out, "ERR syntax error in HELLO option");
                    return;
                }
            }
        }
        if !self.authenticated {
            resp::error(
                out,
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
            return;
        }
        resp::array_header(out, 14);
        for (field, value) in [
            ("server", "starling"),
            ("version", env!("CARGO_PKG_VERSION")),
        ] {
            resp::bulk(out, field.as_bytes());
            resp::bulk(out, value.as_bytes());
        }
        resp::bulk(out, b"proto");
        resp::integer(out, 2);
        resp::bulk(out, b"id");
        resp::integer(out, self.id as i64);
        for (field, value) in [("mode", "standalone"), ("role", "master")] {
            resp::bulk(out, field.as_bytes());
            resp::bulk(out, value.as_bytes());
        }
        resp::bulk(out, b"modules");
        resp::array_header(out, 0);
    }

    /// CLIENT SETNAME / GETNAME / ID / INFO / SETINFO.
    fn client(&mut self, argv: &[&[u8]], out: &mut Vec<u8>) {
        match (argv[1].to_ascii_uppercase().as_slice(), argv.len()) {
            (b"SETNAME", 3) => {
                if argv[2].iter().any(|&b| b <= b' ' || b > b'~') {
                    resp::error(
                        out,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                } else {
                    self.name = (!argv[2].is_empty()).then(|| argv[2].to_vec());
                    resp::ok(out);
                }
            }
            (b"GETNAME", 2) => resp::optional_bulk(out, self.name.as_deref()),
            (b"ID", 2) => resp::integer(out, self.id as i64),
            (b"INFO", 2) => {
                let name =
                    String::from_utf8_lossy(self.name.as_deref().unwrap_or_default()).into_owned();
                resp::bulk_fmt(
                    out,
                    format_args!(
                        "id={} addr={} name={} db=0 cmd=client|info\n",
                        self.id, self.peer, name
                    ),
                );
            }
            (b"SETINFO", 4) => resp::ok(out),
            _ => resp::error(
                out,
                &format!(
                    "ERR unknown subcommand or wrong number of arguments for 'client|{}'",
                    String::from_utf8_lossy(argv[1]).to_lowercase()
                ),
            ),
        }
    }
}

/// Compares without an early exit, so the time taken does not reveal the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// COMMAND, COMMAND COUNT, COMMAND DOCS, COMMAND INFO name...
fn command_command(argv: &[&[u8]], out: &mut Vec<u8>) {
    let Some(sub) = argv.get(1).map(|s| s.to_ascii_uppercase()) else {
        resp::array_header(out, COMMANDS.len());
        COMMANDS
            .iter()
            .for_each(|spec| encode_command_info(spec, out));
        return;
    };
    match sub.as_slice() {
        b"COUNT" => resp::integer(out, COMMANDS.len() as i64),
        // An empty map: redis-cli then falls back to its built-in hints.
        b"DOCS" => resp::array_header(out, 0),
        b"INFO" => {
            resp::array_header(out, argv.len() - 2);
            for name in &argv[2..] {
                match crate::api::command::lookup(name) {
                    Some(spec) => encode_command_info(spec, out),
                    None => out.extend_from_slice(b"*-1\r\n"),
                }
            }
        }
        _ => resp::error(
            out,
            "ERR unknown subcommand for 'command' (COUNT, DOCS, INFO are supported)",
        ),
    }
}

fn encode_command_info(spec: &CommandSpec, out: &mut Vec<u8>) {
    resp::array_header(out, 6);
    resp::bulk(out, spec.name.as_bytes());
    resp::integer(out, i64::from(spec.arity));
    resp::array_header(out, spec.flags.len());
    for flag in spec.flags {
        resp::simple(out, flag);
    }
    resp::integer(out, i64::from(spec.first_key));
    resp::integer(out, i64::from(spec.last_key));
    resp::integer(out, i64::from(spec.key_step));
}

/// CONFIG GET for the few parameters clients ask about (redis-benchmark reads `save` and
/// `appendonly`); CONFIG SET and others are refused.
fn config_command(shard: &Shard, argv: &[&[u8]], out: &mut Vec<u8>) {
    if !argv[1].eq_ignore_ascii_case(b"GET") || argv.len() < 3 {
        resp::error(
            out,
            "ERR only CONFIG GET <parameter> is supported; Starling is configured by file, environment and flags",
        );
        return;
    }
    let durable = shard.config.durability == crate::config::Durability::Sync;
    let port = shard.config.client_addr.port().to_string();
    let parameters: [(&str, &str); 5] = [
        ("save", ""),
        ("appendonly", if durable { "yes" } else { "no" }),
        ("databases", "1"),
        ("maxmemory", "0"),
        ("port", &port),
    ];
    let matches: Vec<_> = parameters
        .iter()
        .filter(|(name, _)| {
            argv[2..]
                .iter()
                .any(|pattern| *pattern == b"*" || pattern.eq_ignore_ascii_case(name.as_bytes()))
        })
        .collect();
    resp::array_header(out, matches.len() * 2);
    for (name, value) in matches {
        resp::bulk(out, name.as_bytes());
        resp::bulk(out, value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_bounded_and_consumed() {
        let mut session = Session::new(1, "test".into(), false);
        let first = session.save_cursor(Cursor {
            shard: 0,
            after: None,
        });
        for _ in 0..CURSORS_MAX {
            session.save_cursor(Cursor {
                shard: 1,
                after: Some(b"k".to_vec()),
            });
        }
        assert_eq!(
            session.take_cursor(first),
            None,
            "the oldest cursor was forgotten"
        );
        let last = session.save_cursor(Cursor {
            shard: 1,
            after: None,
        });
        assert_eq!(
            session.take_cursor(last),
            Some(Cursor {
                shard: 1,
                after: None
            })
        );
        assert_eq!(session.take_cursor(last), None);
    }

    #[test]
    fn password_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
    }

    #[test]
    fn command_count_matches_the_table() {
        let mut out = Vec::new();
        command_command(&[b"COMMAND", b"COUNT"], &mut out);
        assert_eq!(out, format!(":{}\r\n", COMMANDS.len()).into_bytes());
        out.clear();
        command_command(&[b"COMMAND"], &mut out);
        let (reply, used) = resp::Reply::decode(&out).expect("valid").expect("complete");
        assert_eq!(used, out.len());
        let resp::Reply::Array(Some(items)) = reply else {
            panic!("not an array")
        };
        assert_eq!(items.len(), COMMANDS.len());
    }
}
