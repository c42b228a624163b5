//! `corral`: the one binary.
fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or("crds".into()));
    std::fs::create_dir_all(&out)?;
    for (f, y) in corral_api::crds::render_all()? { std::fs::write(out.join(f), y)?; }
    Ok(())
}
