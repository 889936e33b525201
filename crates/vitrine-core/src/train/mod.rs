//! Training, written once for every family: the [`TrainTask`] a model implements, the driver
//! that runs its epochs ([`fit`]), the shared recipe around it ([`recipe::train`]), the record of
//! each epoch, and optimizers.

mod fit;
mod optim;
pub mod recipe;
mod task;

pub use crate::history::{EpochRecord, Monitor, Score, figure_names, write_metrics};
pub use fit::{BEST_WEIGHTS_FILE, FitOutcome, FitPlan, fit, resume};
pub use optim::{build_optimizer, load_module, load_optimizer, save_module, save_optimizer};
pub use recipe::{Batches, Built, HeldOut, Recipe, TrainContext};
pub use task::{Metric, MetricKind, PassTotals, StepStats, TrainTask, sum_steps};
