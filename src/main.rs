//! The `starling` binary: parses the command line and calls into the library.

fn main() -> anyhow::Result<()> {
    Ok(())
}
