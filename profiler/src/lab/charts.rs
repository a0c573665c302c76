//! Charts (plotters, SVG and PNG) from `results.json`.
