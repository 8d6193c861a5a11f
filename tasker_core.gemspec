# frozen_string_literal: true

require_relative "workers/ruby/lib/tasker_core/version"

Gem::Specification.new do |spec|
  spec.name = "tasker_core"
  spec.version = TaskerCore::VERSION
  spec.summary = "Tasker workflow engine: Ruby step handlers on a Rust worker core"
  spec.description = <<~DESC
    Ruby handlers for Tasker workflows. The native extension embeds Tasker's Rust worker core
    (and, optionally, orchestration): steps are claimed from PostgreSQL queues and handed to
    Ruby handler threads without holding the GVL while they wait.
  DESC
  spec.authors = ["Tasker contributors"]
  spec.license = "MIT"
  spec.homepage = "https://github.com/tasker-systems/tasker-core"
  spec.required_ruby_version = ">= 3.1"

  # The extension is built from the Cargo workspace, so every member's manifest and
  # sources ship with the gem, as do the migrations and base configuration the crates
  # compile in.
  patterns = %w[
    Cargo.toml Cargo.lock LICENSE* README.md
    crates/**/* ext/**/* workers/rust/**/* tests/**/*
    migrations/**/* db/**/* config/**/*
    workers/ruby/lib/**/* workers/ruby/examples/**/*
    workers/python/Cargo.toml workers/python/src/**/*
  ]
  spec.files = Dir.glob(patterns, File::FNM_DOTMATCH, base: __dir__).select do |f|
    File.file?(File.join(__dir__, f)) && !f.match?(%r{(\A|/)target/|\.so\z|(\A|/)\.})
  end.sort
  spec.require_paths = ["workers/ruby/lib"]
  spec.extensions = ["ext/tasker_core/extconf.rb"]
end
