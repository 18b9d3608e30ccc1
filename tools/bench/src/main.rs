//! `starling-bench`: measures Starling side by side with its anchors.

fn main() -> anyhow::Result<()> {
    Ok(())
}
