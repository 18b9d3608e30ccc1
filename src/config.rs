//! Node configuration: embedded defaults, a TOML file, `STARLING_*` environment overrides and flags.
