import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { ExecutorService } from "../../gen/keymesh/executor/v1/executor_service_pb.js";
import type { ServiceModule } from "../shared/server/service-module.js";
import { reportSigningSeries } from "../shared/telemetry/metrics-signing.js";
import { executorMigrations } from "./migrations/index.js";
import { createExecutor } from "./executor.js";
import { createExecutorHandler } from "./handler.js";
import { createJobStore } from "./job-store.js";

/** ExecutorService as the host runs it. */
export const executorModule: ServiceModule = {
  name: "executor",
  desc: ExecutorService,
  migrations: executorMigrations,
  needs: { database: true },
  async register(router, ctx) {
    reportSigningSeries("executor");
    const jobs = createJobStore(ctx.db);
    const executorId = `${hostname()}/${process.pid}/${randomBytes(3).toString("hex")}`;
    const executor = createExecutor({
      keys: ctx.clients.keys,
      collection: ctx.clients.collection,
      signing: ctx.clients.signing,
      jobs,
      executorId,
      logger: ctx.logger.child({ executor: executorId }),
    });
    router.service(ExecutorService, createExecutorHandler({ executor, jobs, collection: ctx.clients.collection, shutdown: ctx.shutdown }));
  },
};
