//! The two API calls every status reconciler makes (HTTPScaledObject, EventSubscription): one
//! merge patch of an object's `status`, and a Warning Event on it. What to write is each
//! reconciler's own business.

use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use rouse_core::crd::conditions::action;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, Result};

/// Event notes are cut to this many characters (the API server's limit is 1 KiB).
const NOTE_CHARS: usize = 1000;

/// Merge-patches `status` into `o` (`key` names it in errors).
pub(crate) async fn patch_status<K>(
    client: &Client,
    o: &K,
    key: &str,
    status: &impl Serialize,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = o.namespace().ok_or_else(|| Error::MissingObjectKey {
        object: key.to_string(),
        key: ".metadata.namespace",
    })?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({ "status": status });
    api.patch_status(
        &o.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::StatusPatch {
        object: key.to_string(),
        source,
    })?;
    Ok(())
}

/// A Warning Event on `o` with `reason` and `note` (cut to [`NOTE_CHARS`]).
pub(crate) async fn warn<K>(
    recorder: &Recorder,
    o: &K,
    key: &str,
    reason: &str,
    note: &str,
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: EventType::Warning,
        reason: reason.to_string(),
        note: Some(note.chars().take(NOTE_CHARS).collect()),
        action: action::RECONCILE.into(),
        secondary: None,
    };
    recorder
        .publish(&event, &o.object_ref(&()))
        .await
        .map_err(|source| Error::PublishEvent {
            object: key.to_string(),
            reason: reason.to_string(),
            source,
        })
}
