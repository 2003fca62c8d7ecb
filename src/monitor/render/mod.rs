//! The monitor's views that are not plain protocol text: Prometheus
//! exposition (`/metrics`), the JSON API (`/api/v1/apps`, `docs/api-v1.md`)
//! and the dashboard page (`/`).

pub(crate) mod api;
pub(crate) mod dashboard;
pub(crate) mod metrics;
