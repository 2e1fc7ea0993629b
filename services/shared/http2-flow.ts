import type { ClientHttp2Stream, Http2Session, Settings } from "node:http2";
import { Http2SessionManager } from "@connectrpc/connect-node";

/**
 * HTTP/2 flow control for calls between mesh services, on both ends.
 *
 * HTTP/2's defaults — a 64 KiB window per stream and per connection, 16 KiB frames — fit
 * browsers, not a mesh whose every batch is a 100 KB message in each direction, eight at once
 * on one connection: a message larger than the window waits for the receiver's WINDOW_UPDATE
 * frames (a round trip, and on this project's machine each extra write to a socket costs about
 * as much CPU as signing a few records), and each 16 KiB frame is framed on its own. With these
 * settings a batch's message is one frame, sent without waiting. Measured on the split mesh
 * (`npm run bench:signing -- --only split`, two runs each): keymesh CPU 7.8 s → 7.1–7.3 s for
 * 100k records, wall 1.15–1.17× → 1.08–1.11× the plain loop (with a 32 MiB connection window;
 * the 4 MiB below measured the same, 6.9 and 7.4 s).
 *
 * The windows are credit, not buffers: memory is only used by data actually in flight, and a
 * request is still limited by KEYMESH_MAX_REQUEST_BYTES. The server's windows apply to every
 * client of the port, not only to mesh peers, hence the bound on the connection window below.
 */

/** SETTINGS each end announces: per-stream window and largest frame it accepts. */
export const MESH_HTTP2_SETTINGS: Settings = { initialWindowSize: 4 << 20, maxFrameSize: 1 << 20 };

/**
 * The connection-level window, which SETTINGS do not change: raised once per session. It is
 * also how much a peer can make this end buffer on one connection without it reading (64 KiB
 * by default), so it stays at the largest request a server accepts anyway
 * (KEYMESH_MAX_REQUEST_BYTES' default): eight batches of 100 KB in flight fit many times over.
 */
const CONNECTION_WINDOW = 4 << 20;

const widened = new WeakSet<Http2Session>();

/** Raises a session's connection-level receive window (once per session). */
export function widenConnectionWindow(session: Http2Session | undefined): void {
  if (session === undefined || widened.has(session) || session.destroyed) return;
  widened.add(session);
  try {
    session.setLocalWindowSize(CONNECTION_WINDOW);
  } catch {
    // A session closing as it opens keeps the default window; its calls still work.
  }
}

/**
 * connect-node's session manager, whose sessions announce MESH_HTTP2_SETTINGS and get the wide
 * connection window: connect-node opens sessions itself, so the window is raised on the first
 * stream of each.
 */
export class MeshHttp2SessionManager extends Http2SessionManager {
  override async request(...args: Parameters<Http2SessionManager["request"]>): Promise<ClientHttp2Stream> {
    const stream = await super.request(...args);
    widenConnectionWindow(stream.session);
    return stream;
  }
}
