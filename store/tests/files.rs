//! The embedded store's files hold every Secret: only their owner may read
//! them, whether the store creates them or finds them left readable.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use corral_store::embedded::EmbeddedStore;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).map_or(0, |m| m.permissions().mode() & 0o777)
}

#[test]
fn the_database_and_its_wal_are_private() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("store.db");
    let store = EmbeddedStore::open(&db)?;
    for f in ["store.db", "store.db-wal", "store.db-shm"] {
        let p = dir.path().join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert_eq!(mode(&db), 0o600);
    drop(store);

    // A database left readable by an older version is restricted on open.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644))?;
    let _store = EmbeddedStore::open(&db)?;
    assert_eq!(mode(&db), 0o600);
    Ok(())
}
