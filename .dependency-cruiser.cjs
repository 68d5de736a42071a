/**
 * The house rules of docs/architecture.md ("Rules checked in CI") as dependency-cruiser rules.
 * Run them with `npm run check:architecture` (scripts/check-architecture.mjs), which adds what
 * dependency-cruiser cannot see: cycles between folders, and reads of process.argv.
 *
 * Each rule's `comment` is what a failure prints: say why the rule exists, so the next engineer
 * knows what to do instead.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "domain-imports-nothing",
      severity: "error",
      comment:
        "src/domain/ holds the gateway's vocabulary (instances, errors, JSON-RPC shapes): every folder " +
        "may use it, so it may use no other folder, or the folders stop having a direction. Move what " +
        "domain needs into domain/, or the code that needs the other folder out of domain/.",
      from: { path: "^src/domain/" },
      to: { path: "^(src|plugins)/", pathNot: "^src/domain/" }
    },
    {
      name: "transport-knows-no-strategies",
      severity: "error",
      comment:
        "src/transport/ moves JSON-RPC messages to one instance; choosing the instance (strategies), " +
        "dispatch, sessions, the registry and the client's HTTP (http/) are above it: it uses only " +
        "domain/ and the clock. What it needs from the rest comes in through its own interfaces " +
        "(ConnectionPolicy).",
      from: { path: "^src/transport/" },
      to: { path: "^(src|plugins)/", pathNot: "^src/(transport|domain|clock)/" }
    },
    {
      name: "http-server-only-in-http-and-cli",
      severity: "error",
      comment:
        "Only src/http/ (and the CLI that starts it) serves HTTP: one node:http server owned by a layer. " +
        "Elsewhere, take what you need (a request's identity, a body) as plain values from http/. " +
        "Backends are reached as a client (transport/), which this rule does not concern.",
      from: { pathNot: "^src/(http|cli)/|^src/main\\.ts$" },
      to: {
        path: [
          "node_modules/@effect/platform/.*/(HttpServer|HttpApi|HttpRouter|HttpMiddleware|HttpApp)[A-Za-z]*\\.",
          "node_modules/@effect/platform-node/.*/NodeHttpServer[A-Za-z]*\\."
        ]
      }
    },
    {
      name: "argv-only-in-cli",
      severity: "error",
      comment:
        "Only src/cli/ (and src/main.ts) read the command line: everything else takes its settings " +
        "from the parsed config, so a setting has one name and one default.",
      from: { pathNot: "^src/cli/|^src/main\\.ts$" },
      to: { path: "node_modules/@effect/cli/" }
    },
    {
      name: "plugins-through-the-plugin-api",
      severity: "error",
      comment:
        "A built-in plugin is compiled like a user's: it sees the gateway only through the public " +
        "'mcp-gateway/plugin' entry (src/plugin.ts). If it needs more, extend that API.",
      from: { path: "^plugins/" },
      to: { path: "^src/", dependencyTypesNot: ["aliased-tsconfig-paths"] }
    },
    {
      name: "no-cycles",
      severity: "error",
      comment:
        "Modules that import each other (directly or around a loop) cannot be understood, tested or " +
        "moved one at a time. Move what both need into a third module, or pass it in.",
      from: {},
      to: { circular: true }
    }
  ],
  options: {
    // The gateway's own files only: npm packages are resolved (so rules can name them) but not cruised.
    doNotFollow: { path: "node_modules" },
    // Type-only imports count: a folder that names another's types depends on it.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      extensions: [".ts", ".mts", ".js", ".mjs", ".cjs", ".d.ts"],
      mainFields: ["module", "main", "types"]
    }
  }
}
