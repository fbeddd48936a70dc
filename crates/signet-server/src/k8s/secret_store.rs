//! The CA key store of Kubernetes mode: one Secret, written with optimistic concurrency twice
//! over — the state's own generation (kept in an annotation) and the Secret's
//! `resourceVersion` — so two replicas can never overwrite each other's keys.
//!
//! The `KeyStore` trait is synchronous (the file store needs nothing else); calls block on the
//! Kubernetes API with `block_in_place`, which needs the multi-threaded Tokio runtime the server
//! runs on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use signet_ca::{KeyStore, KeyStoreError, PersistedState};
use zeroize::Zeroizing;

/// The data key holding the CA state JSON.
pub const STATE_KEY: &str = "ca-state.json";
/// The annotation mirroring the state generation (readable without decoding the keys).
pub const GENERATION_ANNOTATION: &str = "signet.dev/ca-generation";

/// A Secret-backed key store.
#[derive(Clone)]
pub struct SecretKeyStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for SecretKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeyStore({}/{})", self.namespace, self.name)
    }
}

impl SecretKeyStore {
    /// A store in Secret `namespace/name`. Must be created inside a Tokio runtime.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Result<Self, KeyStoreError> {
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| KeyStoreError::Unavailable {
                store: format!("secret {namespace}/{name}"),
                reason: e.to_string(),
            })?;
        Ok(Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            handle,
        })
    }

    fn label(&self) -> String {
        format!("secret {}/{}", self.namespace, self.name)
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> KeyStoreError {
        KeyStoreError::Unavailable {
            store: self.label(),
            reason: error.to_string(),
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> KeyStoreError {
        KeyStoreError::Corrupt {
            path: PathBuf::from(self.label()),
            reason: reason.into(),
        }
    }

    fn block<T>(&self, future: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.handle.block_on(future))
    }

    fn read(&self) -> Result<Option<(Secret, PersistedState)>, KeyStoreError> {
        let Some(secret) = self
            .block(self.api.get_opt(&self.name))
            .map_err(|e| self.unavailable(e))?
        else {
            return Ok(None);
        };
        let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(STATE_KEY)) else {
            return Err(self.corrupt(format!("it has no {STATE_KEY} key")));
        };
        let json = Zeroizing::new(bytes.0.clone());
        let state: PersistedState =
            serde_json::from_slice(&json).map_err(|e| self.corrupt(e.to_string()))?;
        if state.format != signet_ca::keystore::STATE_FORMAT {
            return Err(self.corrupt(format!("unsupported format {}", state.format)));
        }
        Ok(Some((secret, state)))
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl KeyStore for SecretKeyStore {
    fn load(&self) -> Result<Option<PersistedState>, KeyStoreError> {
        Ok(self.read()?.map(|(_, state)| state))
    }

    fn store(&self, state: &PersistedState, expected_generation: u64) -> Result<(), KeyStoreError> {
        let current = self.read()?;
        let found = current.as_ref().map_or(0, |(_, s)| s.generation);
        if found != expected_generation {
            return Err(KeyStoreError::Conflict {
                expected: expected_generation,
                found,
            });
        }
        let json =
            Zeroizing::new(serde_json::to_vec(state).map_err(|e| self.corrupt(e.to_string()))?);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                // Replacing with the resourceVersion read makes the API server refuse the write
                // (409) if anyone changed the Secret in between.
                resource_version: current
                    .as_ref()
                    .and_then(|(s, _)| s.metadata.resource_version.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "signet".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    GENERATION_ANNOTATION.to_owned(),
                    state.generation.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_owned()),
            data: Some(BTreeMap::from([(
                STATE_KEY.to_owned(),
                ByteString(json.to_vec()),
            )])),
            ..Secret::default()
        };
        let result = if current.is_some() {
            self.block(
                self.api
                    .replace(&self.name, &PostParams::default(), &secret),
            )
        } else {
            self.block(self.api.create(&PostParams::default(), &secret))
        };
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Err(KeyStoreError::Conflict {
                expected: expected_generation,
                found: self.load()?.map_or(0, |s| s.generation),
            }),
            Err(error) => Err(self.unavailable(error)),
        }
    }
}
