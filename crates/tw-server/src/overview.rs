//! What the status page grid and the API's tenant list share: which tenants and checks are
//! configured (the catalog), and how the states of one tenant's targets fold into one cell per
//! check.
//!
//! The catalog comes from the configured targets the daemon hands to `Metrics::set_targets`
//! at start and on every reload, so a page never needs the config and a tenant removed by a
//! reload disappears from the grid at once. States come from the store; a state whose target
//! is no longer configured does not colour a cell.

use std::collections::BTreeMap;

use tw_core::{CheckKind, Reason, Status, Timestamp};
use tw_store::CheckState;

use crate::Metrics;

/// Configured tenants and, per tenant, how many targets each check kind has.
pub(crate) struct Catalog {
    tenants: BTreeMap<String, BTreeMap<CheckKind, usize>>,
}

impl Catalog {
    pub(crate) fn of(metrics: &Metrics) -> Catalog {
        let tenants = metrics
            .configured_checks()
            .into_iter()
            .map(|(tenant, checks)| {
                let checks = checks
                    .into_iter()
                    .filter_map(|(check, count)| Some((check.parse::<CheckKind>().ok()?, count)))
                    .collect();
                (tenant, checks)
            })
            .collect();
        Catalog { tenants }
    }

    pub(crate) fn len(&self) -> usize {
        self.tenants.len()
    }

    pub(crate) fn contains(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    pub(crate) fn checks_of(&self, tenant: &str) -> Option<&BTreeMap<CheckKind, usize>> {
        self.tenants.get(tenant)
    }

    /// The check kinds any tenant has, in `CheckKind::ALL` order: the grid's columns.
    pub(crate) fn columns(&self) -> Vec<CheckKind> {
        CheckKind::ALL
            .into_iter()
            .filter(|kind| {
                self.tenants
                    .values()
                    .any(|checks| checks.contains_key(kind))
            })
            .collect()
    }

    /// Up to `limit` tenant names after `after` (exclusive), and the name to continue after
    /// when more remain.
    pub(crate) fn page(&self, after: Option<&str>, limit: usize) -> (Vec<&str>, Option<String>) {
        use std::ops::Bound;
        let lower = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut names: Vec<&str> = self
            .tenants
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|(name, _)| name.as_str())
            .take(limit.saturating_add(1))
            .collect();
        let next = if names.len() > limit {
            names.truncate(limit);
            names.last().map(|name| (*name).to_owned())
        } else {
            None
        };
        (names, next)
    }
}

/// A grid cell's colour: a verdict, `pending` (configured, no verdict yet) or `none` (the
/// check is not configured for this tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellStatus {
    Verdict(Status),
    Pending,
    None,
}

impl CellStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CellStatus::Verdict(status) => status.as_str(),
            CellStatus::Pending => "pending",
            CellStatus::None => "none",
        }
    }
}

/// One (tenant, check): the worst verdict among its configured targets.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cell {
    pub(crate) status: CellStatus,
    /// The worst target's reason, summary, target and since.
    pub(crate) worst: Option<Worst>,
    /// Configured targets.
    pub(crate) targets: usize,
    /// Targets with a verdict, by status (ok, warning, critical, unknown).
    pub(crate) counts: [usize; 4],
    /// The latest state change among the targets.
    pub(crate) last_change: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Worst {
    pub(crate) target: String,
    pub(crate) reason: Reason,
    pub(crate) summary: String,
    pub(crate) since: Timestamp,
}

impl Cell {
    fn empty(targets: usize) -> Cell {
        Cell {
            status: if targets == 0 {
                CellStatus::None
            } else {
                CellStatus::Pending
            },
            worst: None,
            targets,
            counts: [0; 4],
            last_change: None,
        }
    }

    pub(crate) fn seen(&self) -> usize {
        self.counts.iter().sum()
    }

    pub(crate) fn count(&self, status: Status) -> usize {
        self.counts[usize::from(status.code())]
    }
}

/// Folds one tenant's states into a cell per configured check. `states` may hold other
/// tenants' states and unconfigured targets; both are skipped.
pub(crate) fn cells(
    metrics: &Metrics,
    catalog: &Catalog,
    tenant: &str,
    states: &[CheckState],
) -> BTreeMap<CheckKind, Cell> {
    let mut cells: BTreeMap<CheckKind, Cell> = catalog
        .checks_of(tenant)
        .map(|checks| {
            checks
                .iter()
                .map(|(kind, targets)| (*kind, Cell::empty(*targets)))
                .collect()
        })
        .unwrap_or_default();
    for state in states.iter().filter(|state| state.tenant == tenant) {
        let Some(cell) = cells.get_mut(&state.check) else {
            continue;
        };
        if !metrics.is_configured(tenant, state.check, &state.target) {
            continue;
        }
        cell.counts[usize::from(state.status.code())] += 1;
        cell.last_change = cell.last_change.max(Some(state.since));
        let worse = match cell.status {
            CellStatus::Verdict(current) => {
                state.status.severity() > current.severity()
                    // Within the same status, the longest-standing problem is the one to show.
                    || (state.status == current
                        && cell.worst.as_ref().is_some_and(|w| state.since < w.since))
            }
            CellStatus::Pending | CellStatus::None => true,
        };
        if worse {
            cell.status = CellStatus::Verdict(state.status);
            cell.worst = Some(Worst {
                target: state.target.clone(),
                reason: state.reason,
                summary: state.summary.clone(),
                since: state.since,
            });
        }
    }
    cells
}

/// The worst status of a tenant's cells (critical > warning > unknown > ok), `pending` when
/// none has a verdict yet.
pub(crate) fn tenant_status(cells: &BTreeMap<CheckKind, Cell>) -> CellStatus {
    cells
        .values()
        .filter_map(|cell| match cell.status {
            CellStatus::Verdict(status) => Some(status),
            CellStatus::Pending | CellStatus::None => None,
        })
        .reduce(Status::worst)
        .map_or(CellStatus::Pending, CellStatus::Verdict)
}
