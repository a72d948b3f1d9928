//! Pure model shared by Rouse's proxy and controller: routes and how a request picks one, the
//! per-target state the data plane and the platform share (ready endpoints, pending demand), and
//! the limits that bound held requests, the demand feed's wire types ([`feed`]) and the one
//! metric-registration helper ([`metrics`]) and YAML reader ([`yaml`]), and the HTTP/1 request
//! head checks of the proxy's listener ([`http1`]). No sockets, no runtime: everything here is
//! unit-testable.

#[cfg(feature = "crd")]
pub mod crd;
pub mod feed;
pub mod http1;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
pub mod route;
pub mod status;
pub mod target;
pub mod yaml;

pub use route::{Conflict, normalize_host, normalize_path};
pub use route::{
    HeaderMatch, HostPattern, Match, NoHeaders, PathPrefix, RequestHeaders, Route, RouteError,
    RouteLimits, RouteTable, UpstreamProtocol,
};
pub use target::{Demand, DemandSnapshot, Endpoint, EndpointSet, Target};
