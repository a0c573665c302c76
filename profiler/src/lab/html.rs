//! The self-contained HTML report (SVGs inline, no network).
