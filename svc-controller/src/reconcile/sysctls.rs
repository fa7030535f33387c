//! The sysctls held at every full pass.

use super::*;

impl<D: Dataplane> Reconciler<D> {
    pub(super) fn hold_sysctls(&mut self, report: &mut SyncReport) {
        for (key, value) in self.config.sysctls.clone() {
            let current = self.dataplane.sysctl(&key);
            let result = match current {
                Ok(Some(v)) if v == value => Ok(false),
                Ok(_) => self.dataplane.set_sysctl(&key, &value).map(|()| true),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => {
                    self.metrics.sysctl_writes += 1;
                    report.sysctl_writes += 1;
                    info!(sysctl = %key, value = %value, "sysctl set");
                }
                Ok(false) => {}
                Err(e) => {
                    self.metrics.sysctl_failures += 1;
                    warn!(sysctl = %key, value = %value, error = %e, "cannot hold sysctl");
                    report.errors.push(e.into());
                }
            }
        }
    }
}
