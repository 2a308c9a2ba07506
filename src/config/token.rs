//! Reading access tokens from a file or a named environment variable into [`Secret`].
//!
//! Every function returns a reason string without the token. A name that might itself be a
//! pasted token is not echoed either (see [`TokenFileName`] and [`env_var_display`]).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::secret::Secret;

/// A token file larger than this holds something other than a token (or is the wrong file).
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

/// How a token file's path may be shown in a message. A `token_file` value without any `/`
/// is not echoed while no such file exists: it may be a token pasted into the wrong key. Once
/// the file is found, it is a file name, shown like any other (as the permission warning does).
pub(crate) enum TokenFileName<'a> {
    Shown(&'a Path),
    Hidden,
}

impl TokenFileName<'_> {
    /// `Shown` when the value as written contains a `/`.
    pub(crate) fn for_value<'a>(value_as_written: &str, resolved: &'a Path) -> TokenFileName<'a> {
        if value_as_written.contains('/') {
            TokenFileName::Shown(resolved)
        } else {
            TokenFileName::Hidden
        }
    }
}

impl fmt::Display for TokenFileName<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFileName::Shown(path) => write!(formatter, "{}", path.display()),
            TokenFileName::Hidden => formatter.write_str(
                "(name not shown: it has no '/' and may be a token pasted by mistake; \
                 write a path such as ./token)",
            ),
        }
    }
}

/// A token read from a file.
pub(crate) struct TokenFromFile {
    pub token: Secret,
    /// The file's permission bits when others, or a group the daemon is not in, may read it.
    pub readable_by_others_mode: Option<u32>,
}

/// Reads, trims and checks a token file.
pub(crate) fn read_token_file(path: &Path, name: &TokenFileName) -> Result<TokenFromFile, String> {
    // Checked before opening: opening a FIFO would block, and a device could be endless.
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("cannot read token file {name}: {error}"))?;
    // The file exists, so the name is a file's name and not a pasted token.
    let name = &TokenFileName::Shown(path);
    if !metadata.is_file() {
        return Err(format!("token file {name} is not a regular file"));
    }
    let file =
        File::open(path).map_err(|error| format!("cannot read token file {name}: {error}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read token file {name}: {error}"))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "token file {name} is larger than {MAX_TOKEN_FILE_BYTES} bytes; it must hold only the token"
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("token file {name} is not valid UTF-8 text"))?;
    let token =
        check_token_text(&text).map_err(|problem| format!("token file {name} {problem}"))?;
    Ok(TokenFromFile {
        token,
        readable_by_others_mode: readable_by_others_mode(&metadata),
    })
}

/// Readable by others, or by a group the daemon is not in. A group-readable file whose group is
/// one of the daemon's own (a Kubernetes secret volume with `fsGroup`, a dedicated service
/// group) is not reported: only the daemon's own group can read it.
#[cfg(unix)]
pub(crate) fn readable_by_others_mode(metadata: &std::fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = metadata.permissions().mode() & 0o7777;
    let world_readable = mode & 0o004 != 0;
    let foreign_group_readable = mode & 0o040 != 0 && !own_group_ids().contains(&metadata.gid());
    (world_readable || foreign_group_readable).then_some(mode)
}

/// The process's real, effective and supplementary group ids, from `/proc/self/status`
/// (empty where there is no procfs, which makes every group-readable file reported).
#[cfg(unix)]
fn own_group_ids() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter_map(|line| {
            line.strip_prefix("Gid:")
                .or_else(|| line.strip_prefix("Groups:"))
        })
        .flat_map(|ids| ids.split_whitespace())
        .filter_map(|id| id.parse().ok())
        .collect()
}

#[cfg(not(unix))]
pub(crate) fn readable_by_others_mode(_metadata: &std::fs::Metadata) -> Option<u32> {
    None
}

/// Whether `name` can be an environment variable name at all: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_valid_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How an environment variable's name may be shown: only a conventional UPPER_CASE name is
/// echoed, since a mixed-case "name" may be a token pasted into `token_env` by mistake.
pub(crate) fn env_var_display(name: &str) -> String {
    let conventional = is_valid_env_var_name(name)
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if conventional {
        name.to_owned()
    } else {
        "(name not shown: it is not UPPER_CASE and may be a token pasted by mistake)".to_owned()
    }
}

/// Reads a token from the environment variable `name` (already known to be a valid name).
/// The error is the end of a sentence about the variable: `is not set`, `is empty; ...`.
pub(crate) fn read_token_env(name: &str) -> Result<Secret, String> {
    match std::env::var(name) {
        Ok(text) => check_token_text(&text).map_err(str::to_owned),
        Err(std::env::VarError::NotPresent) => Err("is not set".to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err("is not valid UTF-8".to_owned()),
    }
}

/// Trims surrounding whitespace (a trailing newline is normal in a file) and refuses what
/// cannot be a token. Returns the problem as the end of a sentence, without the text.
fn check_token_text(text: &str) -> Result<Secret, &'static str> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("is empty; it must hold the access token");
    }
    if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "holds whitespace or control characters inside the token; it must hold only the token",
        );
    }
    Ok(Secret::new(trimmed))
}
