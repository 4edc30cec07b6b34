//! Counting the calling process's threads.
use crate::Error;

pub(crate) fn require_single() -> Result<(), Error> {
    Ok(())
}
