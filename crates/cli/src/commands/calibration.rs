//! `shears calibration MODEL -o FILE`, kept (hidden) for old scripts: the
//! synthetic calibration file is now `shears generate FILE --calibration-for
//! MODEL`, so that it is not mistaken for `shears calibrate`.

use anyhow::Result;

use crate::args::CalibrationArgs;
use crate::output::Out;

pub fn run(a: &CalibrationArgs, out: &mut Out) -> Result<()> {
    tracing::warn!(
        "`shears calibration` moved to `shears generate FILE --calibration-for MODEL` \
         (synthetic test data); calibration from real text is `shears calibrate`"
    );
    crate::lm::synthetic_calibration(&a.model, &a.output, a.rows, a.seed, a.force, out)
}
