//! CityCloud: a Kubernetes operator that gives every agency of a city government
//! isolated, consistently provisioned hosting and wires it to the city's shared services.

pub mod api;
pub mod crds;

/// The single field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "citycloud-operator";
