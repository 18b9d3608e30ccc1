//! The `node` suite (being rebuilt).

/// Options of the `node` suite.
#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the suite.
pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("the node suite is not built yet")
}
