//! The metrics a run's steps recorded.

use ckpt::store::StepInfo;

/// Every metric name recorded, in first-seen order.
pub fn metric_names(steps: &[StepInfo]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in steps {
        for k in s.metrics.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    names
}
