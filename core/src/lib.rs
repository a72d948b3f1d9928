//! Pure model shared by Rouse's proxy and controller: routes and how a request picks one, the
//! per-target state the data plane and the platform share (ready endpoints, pending demand), and
//! the limits that bound held requests. No sockets, no runtime: everything here is unit-testable.

pub mod crd;
pub mod route;
pub mod target;

pub use route::{Conflict, normalize_host, normalize_path};
pub use route::{
    HeaderMatch, HostPattern, Match, NoHeaders, PathPrefix, RequestHeaders, Route, RouteError,
    RouteLimits, RouteTable, UpstreamProtocol,
};
pub use target::{Demand, DemandSnapshot, Endpoint, EndpointSet, Target};
