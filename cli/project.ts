/**
 * Commands about selfsup itself rather than a run: `test` (every suite, or
 * the tests whose names match) and `bundle` (an archive that runs selfsup
 * without network). Both are shell scripts under scripts/, listed here so
 * that `--help` shows them and `test --help` answers instead of testing.
 *
 * @module
 */
import type { Command } from "commander";
import { join } from "node:path";

const ROOT = join(import.meta.dirname!, "..");

/** Runs a script of scripts/ with this terminal; resolves to its exit code. */
async function script(name: string, args: string[]): Promise<number> {
  const child = new Deno.Command("sh", { args: [join(ROOT, "scripts", name), ...args], stdin: "inherit" })
    .spawn();
  return (await child.status).code;
}

export function registerProjectCommands(prog: Command): void {
  prog.command("test")
    .description(
      "run the test suites (cargo test in native/, deno test in tests/); ends with 'N passed, N failed, N skipped'",
    )
    .argument("[filter]", "only the tests whose names contain this text, in both suites")
    .addHelpText(
      "after",
      "\nThe tests run on native/ built with its test hooks (cargo feature testing, into native/target/testing/;" +
        "\nthe release library ./selfsup uses stays without them). Tests that need a GPU run only where libtorch" +
        "\nsees one. Slow on 2 cores: the whole run takes 10-30 min.",
    )
    .action(async (filter?: string) => {
      Deno.exitCode = await script("test-all.sh", filter ? [filter] : []);
    });

  prog.command("bundle")
    .description(
      "write a relocatable archive (.tar.xz) that runs selfsup where torch 2.11.0 is installed and there is no network",
    )
    .argument("<out>", "the archive to write, e.g. selfsup.tar.xz (relative to this directory)")
    .option("--no-tests", "leave out the compiled cargo test binaries and the library with the test hooks")
    .addHelpText(
      "after",
      "\nIt holds Deno, the built native library, the npm dependencies, the sources and scripts, and (unless\n" +
        "--no-tests) the cargo test binaries. Unpack it anywhere and run ./selfsup there; see docs/OFFLINE.md.",
    )
    .action(async (out: string, o: { tests: boolean }) => {
      Deno.exitCode = await script("bundle.sh", [...(o.tests ? [] : ["--no-tests"]), out]);
    });
}
