import Foundation
import StasisCore
import Testing

@testable import Models

@Suite("Model configuration")
struct ModelConfigurationTests {
    @Test func anEmptyConfigurationIsTheScriptedModel() throws {
        let configuration = try JSONDecoder().decode(ModelConfiguration.self, from: Data("{}".utf8))
        #expect(configuration == .scripted)
        #expect(try configuration.makeProvider().description == "scripted")
    }

    @Test func roundTripsThroughJSON() throws {
        let configuration = ModelConfiguration(
            provider: "openai", model: "qwen3:8b", baseURL: "http://127.0.0.1:11434/v1", apiKeyEnv: "OLLAMA_KEY")
        let data = try JSONEncoder().encode(configuration)
        #expect(try JSONDecoder().decode(ModelConfiguration.self, from: data) == configuration)
    }

    @Test func anUnknownProviderIsRefused() throws {
        let error = try #require(throws: StasisError.self) {
            try ModelConfiguration(provider: "gemini", model: "x").makeProvider()
        }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("gemini"))
    }

    @Test(arguments: ["openai", "anthropic"])
    func anHTTPProviderNeedsAModel(provider: String) throws {
        let error = try #require(throws: StasisError.self) {
            try ModelConfiguration(provider: provider, baseURL: "http://127.0.0.1:1").makeProvider()
        }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("model"))
    }

    @Test func anthropicNeedsAKey() throws {
        let error = try #require(throws: StasisError.self) {
            try ModelConfiguration(provider: "anthropic", model: "claude-haiku-4-5").makeProvider()
        }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains("apiKeyEnv"))
    }

    @Test func anUnsetKeyVariableIsNamed() throws {
        let name = "STASIS_TEST_UNSET_\(UUID().uuidString.prefix(8))"
        let error = try #require(throws: StasisError.self) {
            try ModelConfiguration(provider: "anthropic", model: "claude-haiku-4-5", apiKeyEnv: name).makeProvider()
        }
        #expect(error.message.contains(name))
    }

    @Test func openAIsOwnAPINeedsAKeyButALocalServerDoesNot() throws {
        #expect(throws: StasisError.self) {
            try ModelConfiguration(provider: "openai", model: "gpt-4o-mini").makeProvider()
        }
        let local = try ModelConfiguration(provider: "openai", model: "qwen3:8b", baseURL: "http://127.0.0.1:11434/v1")
            .makeProvider()
        #expect(local.description == "openai:qwen3:8b at http://127.0.0.1:11434/v1")
    }

    @Test func bothKeySourcesAreRefused() throws {
        let error = try #require(throws: StasisError.self) {
            try ModelConfiguration(provider: "anthropic", model: "m", apiKeyEnv: "A", apiKeyFile: "/b").makeProvider()
        }
        #expect(error.message.contains("not both"))
    }

    @Test func aKeyFromTheEnvironmentMakesAnAnthropicProvider() throws {
        let name = "STASIS_TEST_ANTHROPIC_\(UUID().uuidString.prefix(8))"
        setenv(name, "sk-ant-configured", 1)
        defer { unsetenv(name) }
        let provider = try ModelConfiguration(provider: "anthropic", model: "claude-haiku-4-5", apiKeyEnv: name)
            .makeProvider()
        #expect(provider.description == "anthropic:claude-haiku-4-5 at https://api.anthropic.com")
    }
}
