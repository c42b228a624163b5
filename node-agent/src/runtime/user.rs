//! Who a task runs as.
//!
//! A task runs as the user its Job names (`container.user`: `UID[:GID]`, or
//! a name, or `NAME:GROUP`, looked up in the image's `/etc/passwd` and
//! `/etc/group` for a container, the node's for a host process); else as its
//! image's user when that is not root; else as nobody (65534:65534), never
//! as root by default. Root only when the Job says so literally (`0` or
//! `root`, which admission allows only to roles granted it): a name that is
//! uid 0 in the image is refused, so an image cannot smuggle root in.
//!
//! Reads the user database of an image through its snapshot's layer
//! directories, top first, without following links (an image's
//! `/etc/passwd` may be a link meant to point into the host).

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use corral_api::job::is_root_user;

/// nobody:nogroup, the user of a task that names none.
pub const NOBODY: Identity = Identity {
    uid: 65534,
    gid: 65534,
};

/// The largest user database file read.
const MAX_DB_BYTES: u64 = 1 << 20;

/// A numeric user and primary group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
}

/// Why a task's user could not be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// The name is not in `/etc/passwd`.
    #[error("user {0:?} is not in {1}/etc/passwd")]
    UnknownUser(String, &'static str),
    /// The group name is not in `/etc/group`.
    #[error("group {0:?} is not in {1}/etc/group")]
    UnknownGroup(String, &'static str),
    /// The name is uid 0 there, though the Job did not ask for root.
    #[error(
        "user {0:?} is root (uid 0) in {1}/etc/passwd: a task runs as root only when its Job says `user: root`, which its role must allow"
    )]
    HiddenRoot(String, &'static str),
}

/// Where user and group names are looked up.
pub trait UserDb {
    /// Whose database it is, for messages (`the image's `, `the node's `).
    fn owner(&self) -> &'static str;
    /// `/etc/passwd`, if there is one.
    fn passwd(&self) -> Option<String>;
    /// `/etc/group`, if there is one.
    fn group(&self) -> Option<String>;
}

/// The node's own database (host processes).
#[derive(Debug)]
pub struct HostDb;

impl UserDb for HostDb {
    fn owner(&self) -> &'static str {
        "the node's "
    }
    fn passwd(&self) -> Option<String> {
        read_db(Path::new("/etc/passwd"))
    }
    fn group(&self) -> Option<String> {
        read_db(Path::new("/etc/group"))
    }
}

/// An image's database, read from its snapshot's layer directories (top
/// first: an overlay's `upperdir`, then each `lowerdir`; a bind mount's
/// source).
#[derive(Debug)]
pub struct LayersDb {
    layers: Vec<PathBuf>,
}

impl LayersDb {
    /// The layers of a snapshot's mounts (containerd's `type`, `source`
    /// and `options`).
    pub fn from_mounts<'a>(
        mounts: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    ) -> Self {
        let mut layers = Vec::new();
        for (kind, source, options) in mounts {
            match kind {
                "bind" => layers.push(PathBuf::from(source)),
                "overlay" => {
                    let opt = |name: &str| {
                        options
                            .iter()
                            .find_map(|o| o.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                    };
                    if let Some(upper) = opt("upperdir") {
                        layers.push(PathBuf::from(upper));
                    }
                    if let Some(lower) = opt("lowerdir") {
                        layers.extend(lower.split(':').map(PathBuf::from));
                    }
                }
                _ => {}
            }
        }
        LayersDb { layers }
    }

    /// `etc/<name>` from the topmost layer that has it (or deletes it).
    fn find(&self, name: &str) -> Option<String> {
        for layer in &self.layers {
            let etc = layer.join("etc");
            match std::fs::symlink_metadata(&etc) {
                Ok(m) if m.is_dir() => {}
                // A link, a whiteout or a file: nothing readable here.
                Ok(_) => return None,
                Err(_) => continue,
            }
            let path = etc.join(name);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_char_device() => return None,
                Ok(_) => return read_db(&path),
                Err(_) => continue,
            }
        }
        None
    }
}

impl UserDb for LayersDb {
    fn owner(&self) -> &'static str {
        "the image's "
    }
    fn passwd(&self) -> Option<String> {
        self.find("passwd")
    }
    fn group(&self) -> Option<String> {
        self.find("group")
    }
}

/// A regular file's text, opened without following a link, at most
/// [`MAX_DB_BYTES`].
fn read_db(path: &Path) -> Option<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_DB_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The `(id, group)` of `name` in a passwd-like text (`name:x:id:gid:…`).
fn lookup(db: &str, name: &str) -> Option<(u32, Option<u32>)> {
    db.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        let id = fields.nth(1)?.parse().ok()?;
        Some((id, fields.next().and_then(|g| g.parse().ok())))
    })
}

/// The primary group of `uid` in a passwd text.
fn primary_group_of(db: &str, uid: u32) -> Option<u32> {
    db.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.get(2)?.parse::<u32>().ok()? == uid).then_some(())?;
        fields.get(3)?.parse().ok()
    })
}

/// The identity `user` (`UID[:GID]`, `NAME[:GROUP]`) names in `db`.
fn identity_of(user: &str, db: &dyn UserDb) -> Result<Identity, UserError> {
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = db.passwd().unwrap_or_default();
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => (uid, primary_group_of(&passwd, uid)),
        Err(_) => {
            let (uid, gid) = lookup(&passwd, name)
                .ok_or_else(|| UserError::UnknownUser(name.to_owned(), db.owner()))?;
            (uid, gid)
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(&db.group().unwrap_or_default(), g)
                    .ok_or_else(|| UserError::UnknownGroup(g.to_owned(), db.owner()))?
                    .0
            }
        },
        // A user no group names gets its own number, never root's group.
        None => primary.unwrap_or(uid),
    };
    Ok(Identity { uid, gid })
}

/// Who a task runs as: `asked` (its Job's `container.user`), else
/// `image_user` (its image's `User`) unless that is root, else [`NOBODY`].
pub fn resolve(
    asked: Option<&str>,
    image_user: Option<&str>,
    db: &dyn UserDb,
) -> Result<Identity, UserError> {
    if let Some(user) = asked.filter(|u| !u.is_empty()) {
        let id = identity_of(user, db)?;
        if id.uid == 0 && !is_root_user(user) {
            return Err(UserError::HiddenRoot(user.to_owned(), db.owner()));
        }
        return Ok(id);
    }
    match image_user.filter(|u| !u.is_empty()) {
        Some(user) => {
            let id = identity_of(user, db)?;
            Ok(if id.uid == 0 { NOBODY } else { id })
        }
        None => Ok(NOBODY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl UserDb for Fixed {
        fn owner(&self) -> &'static str {
            "the image's "
        }
        fn passwd(&self) -> Option<String> {
            Some("root:x:0:0:root:/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nweb:x:101:102::/var/www:/bin/false\nnobody:x:65534:65534::/:/bin/false\n".into())
        }
        fn group(&self) -> Option<String> {
            Some("root:x:0:\nwww:x:102:\nstaff:x:50:web\n".into())
        }
    }

    #[test]
    fn users_are_settled_by_name_number_and_default() {
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<Identity, UserError>,
        );
        let id = |uid, gid| Ok(Identity { uid, gid });
        let cases: &[Case] = &[
            (None, None, Ok(NOBODY)),
            (None, Some("root"), Ok(NOBODY)),
            (None, Some("0:0"), Ok(NOBODY)),
            (None, Some("web"), id(101, 102)),
            (Some("1000"), None, id(1000, 1000)),
            (Some("101"), None, id(101, 102)),
            (Some("1000:50"), Some("web"), id(1000, 50)),
            (Some("web"), None, id(101, 102)),
            (Some("web:staff"), None, id(101, 50)),
            (Some("root"), None, id(0, 0)),
            (Some("0"), None, id(0, 0)),
            (Some("0:50"), None, id(0, 50)),
            (
                Some("toor"),
                None,
                Err(UserError::HiddenRoot("toor".into(), "the image's ")),
            ),
            (
                Some("ghost"),
                None,
                Err(UserError::UnknownUser("ghost".into(), "the image's ")),
            ),
            (
                Some("web:ghosts"),
                None,
                Err(UserError::UnknownGroup("ghosts".into(), "the image's ")),
            ),
        ];
        for (asked, image, want) in cases {
            assert_eq!(
                &resolve(*asked, *image, &Fixed),
                want,
                "{asked:?} {image:?}"
            );
        }
    }

    #[test]
    fn an_images_database_is_read_from_its_top_layer_and_never_through_a_link()
    -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (upper, mid, low) = (
            dir.path().join("u"),
            dir.path().join("m"),
            dir.path().join("l"),
        );
        for d in [&upper, &mid, &low] {
            std::fs::create_dir_all(d.join("etc"))?;
        }
        std::fs::write(mid.join("etc/passwd"), "app:x:7:7::/:/bin/sh\n")?;
        std::fs::write(low.join("etc/passwd"), "old:x:8:8::/:/bin/sh\n")?;
        let options = vec![
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}:{}", mid.display(), low.display()),
            "workdir=/w".to_owned(),
        ];
        let db = LayersDb::from_mounts([("overlay", "overlay", options.as_slice())]);
        assert_eq!(db.passwd().as_deref(), Some("app:x:7:7::/:/bin/sh\n"));
        // A link to a host file is not followed.
        std::fs::remove_file(mid.join("etc/passwd"))?;
        std::os::unix::fs::symlink("/etc/passwd", mid.join("etc/passwd"))?;
        assert_eq!(db.passwd(), None);
        // Nor is an `etc` that is a link.
        let linked = dir.path().join("linked");
        std::fs::create_dir_all(&linked)?;
        std::os::unix::fs::symlink("/etc", linked.join("etc"))?;
        let source = linked.display().to_string();
        let none: Vec<String> = Vec::new();
        let db = LayersDb::from_mounts([("bind", source.as_str(), none.as_slice())]);
        assert_eq!(db.passwd(), None);
        Ok(())
    }
}
