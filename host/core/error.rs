//! The core's error: what every operation of the daemon returns, whatever
//! layer failed. Each lower error converts into it once, here, deciding
//! which kind of failure it is for the user (the server maps kinds to gRPC
//! codes, the CLI to exit codes). No gRPC here.

use crate::wim::WimError;

/// Why a request could not be served; the server maps these to status codes.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Another job holds what this one needs.
    #[error("{0}")]
    Conflict(String),
    /// The name (or id) is taken by something else.
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in the state the request needs (a plugin disabled
    /// or not installed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An archive is damaged.
    #[error("{0}")]
    DataLoss(String),
    #[error("cancelled")]
    Cancelled,
    /// A value is outside what the call can serve (e.g. a reply too large).
    #[error("{0}")]
    OutOfRange(String),
    /// The request needs more memory (or another limited resource) than the
    /// server grants it now or ever.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is shutting down and takes no new work.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// What kind of failure a [`CoreError`] is, without its message: kept on a
/// failed backup's live record, so a client can tell a busy archive (try
/// again) from a broken one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    PermissionDenied,
    Conflict,
    AlreadyExists,
    FailedPrecondition,
    DataLoss,
    Cancelled,
    OutOfRange,
    ResourceExhausted,
    Unavailable,
    Internal,
}

impl ErrorKind {
    const ALL: [ErrorKind; 12] = [
        ErrorKind::NotFound,
        ErrorKind::InvalidArgument,
        ErrorKind::PermissionDenied,
        ErrorKind::Conflict,
        ErrorKind::AlreadyExists,
        ErrorKind::FailedPrecondition,
        ErrorKind::DataLoss,
        ErrorKind::Cancelled,
        ErrorKind::OutOfRange,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// The word the catalog stores for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Conflict => "conflict",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::DataLoss => "data_loss",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::OutOfRange => "out_of_range",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn from_name(word: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl CoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoreError::NotFound(_) => ErrorKind::NotFound,
            CoreError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            CoreError::PermissionDenied(_) => ErrorKind::PermissionDenied,
            CoreError::Conflict(_) => ErrorKind::Conflict,
            CoreError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            CoreError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            CoreError::DataLoss(_) => ErrorKind::DataLoss,
            CoreError::Cancelled => ErrorKind::Cancelled,
            CoreError::OutOfRange(_) => ErrorKind::OutOfRange,
            CoreError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            CoreError::Unavailable(_) => ErrorKind::Unavailable,
            CoreError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<WimError> for CoreError {
    fn from(e: WimError) -> Self {
        match e {
            WimError::Corrupt(_) | WimError::Invalid(_) => CoreError::DataLoss(e.to_string()),
            // Not damage: a valid archive of a kind we do not write or read
            // (solid, pipable, split); the message says what to do.
            WimError::Unsupported(_) => CoreError::FailedPrecondition(e.to_string()),
            WimError::NotFound(m) => CoreError::NotFound(m),
            WimError::Locked(m) => CoreError::Conflict(m),
            WimError::CodecUnavailable(m) => CoreError::FailedPrecondition(m),
            e @ WimError::CodecFailed(_) => CoreError::Internal(e.to_string()),
            WimError::Cancelled => CoreError::Cancelled,
            WimError::Io(io) => match (io.get_ref(), io.kind()) {
                // What a remote store said travels inside the I/O error
                // (`remote::source`): a recorded object gone is damage; a
                // store down through its retries is "try again later".
                (Some(e), _) if e.is::<crate::remote::source::MissingObject>() => CoreError::DataLoss(io.to_string()),
                (Some(e), _) if e.is::<crate::remote::source::StoreUnavailable>() => {
                    CoreError::Unavailable(io.to_string())
                }
                (_, std::io::ErrorKind::PermissionDenied) => CoreError::PermissionDenied(io.to_string()),
                (_, std::io::ErrorKind::NotFound) => CoreError::NotFound(io.to_string()),
                // Something in the way at the target (a directory where a
                // file goes): the archive is fine.
                (_, std::io::ErrorKind::AlreadyExists) => CoreError::Conflict(io.to_string()),
                (_, std::io::ErrorKind::InvalidInput) => CoreError::InvalidArgument(io.to_string()),
                _ => CoreError::Internal(io.to_string()),
            },
        }
    }
}

impl CoreError {
    /// The same kind of error, its message led by `what` (which archive,
    /// which image). Reading an archive keeps the kind `From<WimError>`
    /// gives: only what is wrong in the archive itself is damage
    /// (DATA_LOSS, exit 3); a disk or object store that refuses the read
    /// (credentials, a missing object, an I/O error) stays what it is.
    pub fn context(self, what: &str) -> CoreError {
        use CoreError::*;
        let m = |m: String| format!("{what}: {m}");
        match self {
            NotFound(s) => NotFound(m(s)),
            InvalidArgument(s) => InvalidArgument(m(s)),
            PermissionDenied(s) => PermissionDenied(m(s)),
            Conflict(s) => Conflict(m(s)),
            AlreadyExists(s) => AlreadyExists(m(s)),
            FailedPrecondition(s) => FailedPrecondition(m(s)),
            DataLoss(s) => DataLoss(m(s)),
            Cancelled => Cancelled,
            OutOfRange(s) => OutOfRange(m(s)),
            ResourceExhausted(s) => ResourceExhausted(m(s)),
            Unavailable(s) => Unavailable(m(s)),
            Internal(s) => Internal(m(s)),
        }
    }
}

impl From<crate::catalog::CatalogError> for CoreError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        CoreError::Internal(e.to_string())
    }
}

impl From<crate::plugins::registry::RegistryError> for CoreError {
    fn from(e: crate::plugins::registry::RegistryError) -> Self {
        use crate::plugins::registry::RegistryError as R;
        match e {
            R::NotFound(m) => CoreError::NotFound(m),
            R::InvalidArgument(m) => CoreError::InvalidArgument(m),
            R::AlreadyExists(m) => CoreError::AlreadyExists(m),
            R::FailedPrecondition(m) => CoreError::FailedPrecondition(m),
            R::PermissionDenied(m) => CoreError::PermissionDenied(m),
            R::Damaged(m) => CoreError::DataLoss(m),
            R::Internal(m) => CoreError::Internal(m),
        }
    }
}

impl From<crate::plugins::destination::DestinationError> for CoreError {
    fn from(e: crate::plugins::destination::DestinationError) -> Self {
        use crate::plugins::destination::DestinationError;
        match e {
            DestinationError::Denied(m) => CoreError::PermissionDenied(m),
            DestinationError::NotFound(m) => CoreError::NotFound(m),
            DestinationError::Unavailable(m) => CoreError::Unavailable(m),
            DestinationError::Invalid(m) => CoreError::FailedPrecondition(m),
            DestinationError::NoSpace(m) => CoreError::ResourceExhausted(m),
            DestinationError::Other(m) | DestinationError::Failed(m) => CoreError::Internal(m),
            DestinationError::Cancelled => CoreError::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind reads back from the word the catalog stores; unknown
    /// words are none of them.
    #[test]
    fn error_kinds_round_trip_through_their_catalog_words() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(k));
        }
        let words: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(words.len(), ErrorKind::ALL.len());
        assert_eq!(ErrorKind::from_name(""), None);
        assert_eq!(ErrorKind::from_name("Unavailable"), None);
    }

    #[test]
    fn errors_map_to_core_errors() {
        use crate::plugins::destination::DestinationError;
        let m = || "m".to_string();
        let pairs = [
            (DestinationError::Denied(m()), CoreError::PermissionDenied(m())),
            (DestinationError::NotFound(m()), CoreError::NotFound(m())),
            (DestinationError::Unavailable(m()), CoreError::Unavailable(m())),
            (DestinationError::Invalid(m()), CoreError::FailedPrecondition(m())),
            (DestinationError::NoSpace(m()), CoreError::ResourceExhausted(m())),
            (DestinationError::Other(m()), CoreError::Internal(m())),
            (DestinationError::Failed(m()), CoreError::Internal(m())),
            (DestinationError::Cancelled, CoreError::Cancelled),
        ];
        for (d, c) in pairs {
            assert_eq!(format!("{:?}", CoreError::from(d)), format!("{c:?}"));
        }
    }
}

#[cfg(test)]
mod read_failure_tests {
    use super::*;

    /// Only damage in the archive is DATA_LOSS; a store or disk that
    /// refuses the read keeps its own kind.
    #[test]
    fn read_failures_are_damage_only_when_the_archive_is_wrong() {
        let io = |k| WimError::Io(std::io::Error::new(k, "HTTP 403: credentials refused"));
        let kind = |e: WimError| std::mem::discriminant(&CoreError::from(e).context("x"));
        let d = std::mem::discriminant;
        assert_eq!(
            kind(WimError::Corrupt("sha".into())),
            d(&CoreError::DataLoss(String::new()))
        );
        assert_eq!(
            kind(WimError::Invalid("bad".into())),
            d(&CoreError::DataLoss(String::new()))
        );
        assert_eq!(
            kind(io(std::io::ErrorKind::PermissionDenied)),
            d(&CoreError::PermissionDenied(String::new()))
        );
        assert_eq!(
            kind(io(std::io::ErrorKind::NotFound)),
            d(&CoreError::NotFound(String::new()))
        );
        assert_eq!(
            kind(io(std::io::ErrorKind::Other)),
            d(&CoreError::Internal(String::new()))
        );
        assert!(CoreError::from(io(std::io::ErrorKind::Other))
            .context("archive a.wim")
            .to_string()
            .starts_with("archive a.wim: "));
    }
}
