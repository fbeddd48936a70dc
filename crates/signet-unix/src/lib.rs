//! What Signet's daemons trust on their own host: directories that hold keys, databases and
//! sockets (created with safe modes, owner and type checked), and gRPC served on Unix sockets to
//! every client library.

mod authority;
mod http_endpoint;
mod idle;
mod limits;
mod private_dir;
mod probes;
mod socket;
mod task;

pub use authority::{AuthorityNormalizer, MAX_HEADER_BLOCK, normalize_authority};
pub use http_endpoint::{EndpointBounds, serve_http};
pub use idle::{ActiveRequest, Activity, IdleDeadline, TrackedBody};
pub use limits::{
    AcceptErrors, ConnectionLimiter, ConnectionLimits, ConnectionSlot, PeerKey, Refusal,
    raise_descriptor_limit,
};
pub use private_dir::{PrivateDirError, ensure_private_dir};
pub use probes::{OPENMETRICS_CONTENT_TYPE, ProbeService, Probes, serve_probes, serve_probes_on};
pub use socket::bind_unix_socket;
pub use task::spawn_named;
