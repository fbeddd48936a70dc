//! The CSI Identity service: name, capabilities (none: node plugin only) and readiness.

use std::sync::Arc;

use signet_proto::csi::v1::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, ProbeRequest, ProbeResponse, identity_server::Identity,
};
use tonic::{Request, Response, Status};

use crate::Settings;

#[derive(Debug)]
pub(crate) struct IdentityService {
    settings: Arc<Settings>,
}

impl IdentityService {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        Self { settings }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.settings.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // No CONTROLLER_SERVICE: the CSIDriver has attachRequired: false and volumes are inline.
        Ok(Response::new(GetPluginCapabilitiesResponse::default()))
    }

    /// Ready once the agent's socket directory exists: before that a publish could only fail.
    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let socket_dir = self.settings.socket_dir.clone();
        let ready = tokio::task::spawn_blocking(move || socket_dir.is_dir())
            .await
            .map_err(|e| Status::internal(format!("probe task failed: {e}")))?;
        Ok(Response::new(ProbeResponse { ready: Some(ready) }))
    }
}
