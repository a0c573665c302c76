//! `cowprof image`: import, list, inspect, compare and remove container images.

use std::io::Write;

use cowprof::image::cli::ImageArgs;

use super::Exit;

pub fn run(args: ImageArgs, out: &mut dyn Write) -> Exit {
    Exit::from_code(cowprof::image::cli::main(args, out))
}
