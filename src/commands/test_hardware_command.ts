/** `florence-edge test-hardware`: the TensorRT hardware test (src/hardware/), for Jetson and desktop GPU owners. */
import type { Command } from "../cli_args.ts";
import { EXIT_CODES_HELP, TEST_HARDWARE_SUMMARY, testHardware } from "../hardware/hardware_test.ts";
import { FLAGS } from "../hardware/options.ts";

export const testHardwareCommand: Command = { summary: TEST_HARDWARE_SUMMARY, flags: FLAGS, notes: EXIT_CODES_HELP, run: (argv) => testHardware(argv) };
