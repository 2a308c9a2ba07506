//! `Secret`: a string that must never be printed.
//!
//! Access tokens and API key values travel through the program inside this type. Its `Debug` and
//! `Display` print a fixed placeholder, it implements no `Serialize`, and the only way to read the
//! value is [`Secret::expose`], which is called where the value leaves the process on purpose
//! (the `Authorization` header of a management API request).

use std::fmt;

/// A secret value (access token, API key). Prints as `**redacted**`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The raw value. Call it only where the value has to leave the process.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether this (configured access token) has the shape of an API key: `sk-` and the key.
    /// The management API takes the personal access token instead ([`ACCESS_TOKEN_HELP`]).
    pub fn looks_like_api_key(&self) -> bool {
        self.0.starts_with("sk-")
    }
}

/// Where the personal access token comes from, for messages about a pasted API key.
pub const ACCESS_TOKEN_HELP: &str = "the management API needs the personal access token \
                                     (Console → Personal Settings), not an API key";

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("**redacted**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("**redacted**")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("tok-123456");
        assert_eq!(format!("{secret:?}"), "**redacted**");
        assert_eq!(format!("{secret}"), "**redacted**");
        assert_eq!(secret.expose(), "tok-123456");
    }
}
