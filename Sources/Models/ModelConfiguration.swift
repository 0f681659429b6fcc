import AsyncHTTPClient
import StasisCore

/// Which model a session talks to, as written in a configuration file.
public struct ModelConfiguration: Codable, Sendable, Hashable {
    /// "scripted" (the default), "openai" or "anthropic".
    public var provider: String
    /// The model's name; required by the HTTP providers.
    public var model: String?
    /// The API's root; each HTTP provider has a default (its vendor's public API).
    public var baseURL: String?
    /// The environment variable holding the API key.
    public var apiKeyEnv: String?
    /// The file holding the API key (mode 0600 or 0400).
    public var apiKeyFile: String?

    /// The scripted model: no network, no key.
    public static let scripted = ModelConfiguration(provider: "scripted")

    /// OpenAI's public API, used when an "openai" configuration names no base URL.
    public static let defaultOpenAIBaseURL = "https://api.openai.com/v1"
    /// Anthropic's public API, used when an "anthropic" configuration names no base URL.
    public static let defaultAnthropicBaseURL = "https://api.anthropic.com"

    /// Creates a configuration.
    public init(
        provider: String = "scripted", model: String? = nil, baseURL: String? = nil, apiKeyEnv: String? = nil,
        apiKeyFile: String? = nil
    ) {
        self.provider = provider
        self.model = model
        self.baseURL = baseURL
        self.apiKeyEnv = apiKeyEnv
        self.apiKeyFile = apiKeyFile
    }

    /// Decodes a configuration; a missing `provider` means the scripted model.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        provider = try container.decodeIfPresent(String.self, forKey: .provider) ?? "scripted"
        model = try container.decodeIfPresent(String.self, forKey: .model)
        baseURL = try container.decodeIfPresent(String.self, forKey: .baseURL)
        apiKeyEnv = try container.decodeIfPresent(String.self, forKey: .apiKeyEnv)
        apiKeyFile = try container.decodeIfPresent(String.self, forKey: .apiKeyFile)
    }

    /// The provider this configuration describes; reads the key now, so a missing key fails here
    /// and not at the first turn.
    public func makeProvider(httpClient: HTTPClient = .shared) throws -> any ModelProvider {
        switch provider {
        case "scripted":
            return ScriptedModel()
        case "openai":
            let model = try requiredModel()
            // Local OpenAI-compatible servers take no key; OpenAI's own API always needs one.
            let key = try apiKey(required: baseURL == nil)
            return OpenAIChatModel(
                baseURL: baseURL ?? Self.defaultOpenAIBaseURL, model: model, apiKey: key, httpClient: httpClient)
        case "anthropic":
            let model = try requiredModel()
            guard let key = try apiKey(required: true) else {
                throw StasisError(.internalError, "no API key for the anthropic provider")
            }
            return AnthropicModel(
                baseURL: baseURL ?? Self.defaultAnthropicBaseURL, model: model, apiKey: key, httpClient: httpClient)
        default:
            throw StasisError(
                .invalidArgument, "unknown model provider '\(provider)'; expected scripted, openai or anthropic")
        }
    }

    private func requiredModel() throws -> String {
        guard let model, !model.isEmpty else {
            throw StasisError(.invalidArgument, "the \(provider) model provider needs a model name (model)")
        }
        return model
    }

    private func apiKey(required: Bool) throws -> APIKey? {
        switch (apiKeyEnv, apiKeyFile) {
        case (let name?, nil):
            return try APIKey.fromEnvironment(name)
        case (nil, let path?):
            return try APIKey.fromFile(path)
        case (.some, .some):
            throw StasisError(
                .invalidArgument, "the \(provider) model provider takes apiKeyEnv or apiKeyFile, not both")
        case (nil, nil):
            guard !required else {
                throw StasisError(
                    .invalidArgument,
                    "the \(provider) model provider needs an API key: set apiKeyEnv (an environment variable) "
                        + "or apiKeyFile (a file of mode 0600)")
            }
            return nil
        }
    }
}
