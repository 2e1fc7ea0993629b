export { createSecretsClient, providersFor, SecretNotFoundError, type SecretsClient, type SecretsClientOptions } from "./client.js";
export { systemClock, type Clock } from "./clock.js";
export { createEnvProvider, createProviderChain, createVaultProvider, envVariableFor, type SecretProvider } from "./providers.js";
export { loadProcessSecrets } from "./process-secrets.js";
