//! `mc schema`: the job spec's JSON Schema, generated from the spec types.

use crate::exit::{Code, Failure};

pub(crate) fn run() -> Result<Code, Failure> {
    crate::printer::out(&maestro_core::spec::json_schema());
    Ok(Code::Success)
}
