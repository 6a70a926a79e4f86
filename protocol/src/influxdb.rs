//! InfluxDB facts that the control and the v2 test server must agree on, kept once.

/// Resource types of the v2 contract (`components.schemas.Resource.properties.type`,
/// identical in `oss.yml` and `cloud.yml`): what a v2 permission may name. The control
/// refuses others before anything is stored; the test server refuses them as InfluxDB
/// does.
pub const RESOURCE_TYPES: &[&str] = &[
    "authorizations",
    "buckets",
    "dashboards",
    "orgs",
    "tasks",
    "telegrafs",
    "users",
    "variables",
    "secrets",
    "labels",
    "views",
    "documents",
    "notificationRules",
    "notificationEndpoints",
    "checks",
    "dbrp",
    "annotations",
    "sources",
    "scrapers",
    "notebooks",
    "remotes",
    "replications",
    "instance",
    "flows",
    "functions",
    "subscriptions",
];
