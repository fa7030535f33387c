//! The sysctls held at every full pass.

use super::*;

impl<D: Dataplane> Round<'_, D> {
    /// Reads each configured sysctl and writes the ones that differ.
    pub(super) fn hold_sysctls(&mut self) {
        let config = self.config;
        for (key, value) in &config.sysctls {
            let current = self.dataplane.sysctl(key);
            let result = match current {
                Ok(Some(v)) if v == *value => Ok(false),
                Ok(_) => self.dataplane.set_sysctl(key, value).map(|()| true),
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => {
                    self.metrics.sysctl_writes += 1;
                    self.report.sysctl_writes += 1;
                    info!(sysctl = %key, value = %value, "sysctl set");
                }
                Ok(false) => {}
                Err(e) => {
                    self.metrics.sysctl_failures += 1;
                    warn!(sysctl = %key, value = %value, error = %e, "cannot hold sysctl");
                    self.report.errors.push(e.into());
                }
            }
        }
    }
}
