//! The `storage` suite (being rebuilt).

/// Options of the `storage` suite.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the suite.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("the storage suite is not built yet")
}
