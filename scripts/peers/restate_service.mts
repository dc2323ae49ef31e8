// Restate's side of scripts/bench-peers.sh: the service the client script
// drives. `many(n)` runs n no-op steps in a row, each a `ctx.run` (journaled
// by the server before the handler goes on, as a Cerebelum step is); `fan(n)`
// runs n of them at once and awaits them all.
//
// Run with Node >= 22: node --experimental-strip-types restate_service.mts PORT

import * as restate from "@restatedev/restate-sdk";

const bench = restate.service({
  name: "bench",
  handlers: {
    many: async (ctx: restate.Context, n: number): Promise<number> => {
      for (let i = 0; i < n; i++) {
        await ctx.run("noop", async () => i);
      }
      return n;
    },
    fan: async (ctx: restate.Context, n: number): Promise<number> => {
      await restate.RestatePromise.all(
        Array.from({ length: n }, (_, i) => ctx.run("noop", async () => i)),
      );
      return n;
    },
  },
});

const port = Number(process.argv[2] ?? "9080");
restate.endpoint().bind(bench).listen(port);
