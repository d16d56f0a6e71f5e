//! The one error type of `ckpt-candle`.

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `ckpt-candle`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or matching a checkpoint failed.
    #[error(transparent)]
    Ckpt(#[from] ckpt::Error),

    /// candle refused an operation (a device that is not there, an
    /// out-of-memory, a shape it cannot broadcast).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// A tensor's dtype has no counterpart on the other side.
    #[error("{name}: dtype {dtype} has no counterpart in {side}")]
    UnsupportedDType {
        /// The tensor's name.
        name: String,
        /// The dtype, by its PyTorch or candle name.
        dtype: String,
        /// `candle` or `ckpt`.
        side: &'static str,
    },

    /// An optimizer or scheduler state does not fit the object it is loaded
    /// into. Nothing was changed.
    #[error("{what}: {key}: {message}")]
    BadState {
        /// `optimizer state` or `scheduler state`.
        what: &'static str,
        /// Where in the state (a `/`-joined path such as `state/0/exp_avg`).
        key: String,
        /// What is wrong.
        message: String,
    },

    /// An argument that cannot work (a learning rate below zero, a
    /// scheduler with no steps).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn optimizer(key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::BadState {
            what: "optimizer state",
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn scheduler(key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::BadState {
            what: "scheduler state",
            key: key.into(),
            message: message.into(),
        }
    }
}
