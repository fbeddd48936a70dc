//! Federation relationships and the last bundle fetched for each (standalone mode).

use rusqlite::{OptionalExtension, params};
use signet_core::federation::{BundleEndpointUrl, EndpointProfile, FederationRelationship};
use signet_spiffe::{Bundle, SpiffeId, TrustDomain};

use super::{Datastore, DatastoreError, Result};

/// Tables of migration 4.
pub(super) const MIGRATION: &str = "CREATE TABLE federation_relationships (
        trust_domain TEXT PRIMARY KEY,
        bundle_endpoint_url TEXT NOT NULL,
        profile TEXT NOT NULL,
        endpoint_spiffe_id TEXT
     );
     CREATE TABLE federated_bundles (
        trust_domain TEXT PRIMARY KEY,
        spiffe_json TEXT NOT NULL
     );
     CREATE TRIGGER federation_insert AFTER INSERT ON federation_relationships BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER federation_update AFTER UPDATE ON federation_relationships BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER federation_delete AFTER DELETE ON federation_relationships BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER federated_bundles_insert AFTER INSERT ON federated_bundles BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER federated_bundles_update AFTER UPDATE ON federated_bundles BEGIN UPDATE generation SET value = value + 1; END;
     CREATE TRIGGER federated_bundles_delete AFTER DELETE ON federated_bundles BEGIN UPDATE generation SET value = value + 1; END;";

fn decode(what: &'static str, reason: impl ToString) -> DatastoreError {
    DatastoreError::Decode {
        what,
        reason: reason.to_string(),
    }
}

type StoredRow = (String, String, String, Option<String>, Option<String>);

fn relationship_of(row: StoredRow) -> Result<(FederationRelationship, Option<Bundle>)> {
    let (trust_domain, url, profile, endpoint_id, bundle) = row;
    let trust_domain =
        TrustDomain::new(&trust_domain).map_err(|e| decode("federation relationship", e))?;
    let bundle_endpoint_url =
        BundleEndpointUrl::parse(&url).map_err(|e| decode("federation relationship", e))?;
    let profile = match (profile.as_str(), endpoint_id) {
        ("https_web", _) => EndpointProfile::HttpsWeb,
        ("https_spiffe", Some(id)) => EndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::new(&id)
                .map_err(|e| decode("federation relationship", e))?,
        },
        (other, _) => {
            return Err(decode(
                "federation relationship",
                format!("unknown profile {other:?}"),
            ));
        }
    };
    let bundle = bundle
        .map(|json| Bundle::from_spiffe_json(trust_domain.clone(), json.as_bytes()))
        .transpose()
        .map_err(|e| decode("federated bundle", e))?;
    Ok((
        FederationRelationship {
            trust_domain,
            bundle_endpoint_url,
            profile,
        },
        bundle,
    ))
}

impl Datastore {
    /// Every relationship with its last bundle.
    pub async fn list_federations(&self) -> Result<Vec<(FederationRelationship, Option<Bundle>)>> {
        if let Some(store) = self.shared() {
            return store
                .federation_rows()
                .await?
                .into_iter()
                .map(relationship_of)
                .collect();
        }
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT r.trust_domain, r.bundle_endpoint_url, r.profile, r.endpoint_spiffe_id, b.spiffe_json
                 FROM federation_relationships r
                 LEFT JOIN federated_bundles b ON b.trust_domain = r.trust_domain
                 ORDER BY r.trust_domain",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.map(|row| relationship_of(row?)).collect()
        })
        .await
    }

    /// Creates or replaces a relationship; `bundle`, if given, becomes its stored bundle.
    pub async fn put_federation(
        &self,
        relationship: FederationRelationship,
        bundle: Option<Bundle>,
    ) -> Result<()> {
        let endpoint_id = match &relationship.profile {
            EndpointProfile::HttpsWeb => None,
            EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                Some(endpoint_spiffe_id.to_string())
            }
        };
        if let Some(store) = self.shared() {
            return store
                .put_federation(
                    relationship.trust_domain.to_string(),
                    relationship.bundle_endpoint_url.as_str().to_owned(),
                    relationship.profile.name().to_owned(),
                    endpoint_id,
                    bundle.map(|b| b.to_spiffe_json()),
                )
                .await;
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(trust_domain) DO UPDATE SET bundle_endpoint_url=excluded.bundle_endpoint_url,
                 profile=excluded.profile, endpoint_spiffe_id=excluded.endpoint_spiffe_id",
                params![
                    relationship.trust_domain.as_str(),
                    relationship.bundle_endpoint_url.as_str(),
                    relationship.profile.name(),
                    endpoint_id
                ],
            )?;
            if let Some(bundle) = bundle {
                upsert_bundle(&tx, &bundle)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Stores the bundle fetched for a relationship (nothing if the relationship is gone).
    pub async fn put_federated_bundle(&self, bundle: Bundle) -> Result<()> {
        if let Some(store) = self.shared() {
            return store
                .put_federated_bundle(bundle.trust_domain().to_string(), bundle.to_spiffe_json())
                .await;
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let related: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM federation_relationships WHERE trust_domain = ?1",
                    [bundle.trust_domain().as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if related.is_some() {
                upsert_bundle(&tx, &bundle)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Deletes a relationship and its bundle; returns whether it existed.
    pub async fn delete_federation(&self, trust_domain: TrustDomain) -> Result<bool> {
        if let Some(store) = self.shared() {
            return store.delete_federation(trust_domain.to_string()).await;
        }
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let deleted = tx.execute(
                "DELETE FROM federation_relationships WHERE trust_domain = ?1",
                [trust_domain.as_str()],
            )?;
            tx.execute(
                "DELETE FROM federated_bundles WHERE trust_domain = ?1",
                [trust_domain.as_str()],
            )?;
            tx.commit()?;
            Ok(deleted > 0)
        })
        .await
    }
}

fn upsert_bundle(tx: &rusqlite::Transaction<'_>, bundle: &Bundle) -> Result<()> {
    tx.execute(
        "INSERT INTO federated_bundles (trust_domain, spiffe_json) VALUES (?1, ?2)
         ON CONFLICT(trust_domain) DO UPDATE SET spiffe_json=excluded.spiffe_json",
        params![bundle.trust_domain().as_str(), bundle.to_spiffe_json()],
    )?;
    Ok(())
}
