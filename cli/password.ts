import type { ReadStream } from "node:tty";
import { UsageError, type CommandIO } from "./command.js";

/**
 * Reads a password the safe ways only: typed at a terminal without echo, or piped on stdin
 * with `--password-stdin` (first line). Never from argv, where `ps` and shell history see it.
 */

async function readAll(stdin: NodeJS.ReadableStream): Promise<string> {
  let text = "";
  stdin.setEncoding("utf8");
  for await (const chunk of stdin) text += String(chunk);
  return text;
}

function readHidden(stdin: ReadStream, stderr: NodeJS.WritableStream, prompt: string): Promise<string> {
  stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding("utf8");
  stdin.resume();
  return new Promise((resolve, reject) => {
    let value = "";
    const finish = () => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write("\n");
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n" || ch === "\u0004") {
          finish();
          resolve(value);
          return;
        }
        if (ch === "\u0003") {
          finish();
          reject(new Error("cancelled"));
          return;
        }
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on("data", onData);
  });
}

/** Reads a password; `confirm` asks twice at a terminal (registration). */
export async function readPassword(io: CommandIO, opts: { fromStdin: boolean; confirm?: boolean }): Promise<string> {
  const stdin = io.stdin ?? process.stdin;
  if (opts.fromStdin) {
    const password = (await readAll(stdin)).split(/\r?\n/, 1)[0] ?? "";
    if (password === "") throw new UsageError("--password-stdin: nothing was read from stdin");
    return password;
  }
  const tty = stdin as ReadStream;
  if (tty.isTTY !== true || typeof tty.setRawMode !== "function") {
    throw new UsageError("stdin is not a terminal: pipe the password with --password-stdin");
  }
  const password = await readHidden(tty, io.stderr, "Password: ");
  if (opts.confirm === true && (await readHidden(tty, io.stderr, "Repeat password: ")) !== password) {
    throw new UsageError("the passwords do not match");
  }
  return password;
}
