//! The controller's error: what failed, on which object, and why. Reconciling never stops on
//! one: the owner of the boundary logs it once (with [`Error::metric_label`] as `kind`), and the
//! next pass (a watch event or the resync tick) tries again.

/// Something the reconciler could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watch failed; the reflector retries with backoff.
    #[error("watch of {kind}: {source}")]
    Watch {
        /// The watched kind, e.g. `Service`.
        kind: &'static str,
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// An object lacks a field the API server always sets (kube's `MissingObjectKey`).
    #[error("{object}: missing {key}")]
    MissingObjectKey {
        /// `namespace/name` as far as it is known.
        object: String,
        /// The field path, e.g. `.metadata.namespace`.
        key: &'static str,
    },
    /// Writing an object's status failed.
    #[error("status of {object}: {source}")]
    StatusPatch {
        object: String,
        #[source]
        source: kube::Error,
    },
    /// Recording an Event on an object failed.
    #[error("{reason} Event on {object}: {source}")]
    PublishEvent {
        object: String,
        reason: String,
        #[source]
        source: kube::Error,
    },
}

/// The controller's `Result`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The variant's name: a bounded label for logs and metrics (never an object name).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Watch { .. } => "Watch",
            Error::MissingObjectKey { .. } => "MissingObjectKey",
            Error::StatusPatch { .. } => "StatusPatch",
            Error::PublishEvent { .. } => "PublishEvent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_label_is_the_variant_name_without_the_object() {
        let e = Error::MissingObjectKey {
            object: "team/app".into(),
            key: ".metadata.namespace",
        };
        assert_eq!(e.metric_label(), "MissingObjectKey");
        assert_eq!(e.to_string(), "team/app: missing .metadata.namespace");
    }
}
