//! openbsd back end.
use crate::{Error, Policy};

pub(crate) fn enter(_p: &Policy) -> Result<(), Error> {
    Err(Error::Unsupported("not yet"))
}
