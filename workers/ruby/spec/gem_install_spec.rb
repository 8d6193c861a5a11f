# frozen_string_literal: true

require "spec_helper"
require "open3"
require "rbconfig"
require "tmpdir"

# Packaging: the gem builds, installs (compiling the extension with Cargo) into an empty
# GEM_HOME, and runs a workflow from there with nothing from this checkout on the load path.
# Cargo's output is kept in tmp/gem-target so a second run only rebuilds the workspace crates;
# a first run starts from a copy of the third-party crates `rake compile` built in
# target/release (the same versions, features and profile), unless TASKER_COLD_GEM_BUILD=1
# asks for what a user's first `gem install` costs.
GEM_TARGET = File.join(ROOT, "tmp/gem-target")

RSpec.describe "the tasker_core gem", :slow do
  def run!(env, *cmd, chdir: ROOT)
    out, status = Open3.capture2e(env, *cmd, chdir: chdir)
    expect(status).to be_success, "#{cmd.join(" ")} failed:\n#{out[-4000..] || out}"
    out
  end

  # What the timing below includes: a cold build, or one reusing dependencies.
  def prepare_gem_target
    return "from scratch" if ENV["TASKER_COLD_GEM_BUILD"] == "1"
    return "reusing tmp/gem-target" if File.directory?(GEM_TARGET)

    built = File.join(ROOT, "target/release")
    return "from scratch" unless File.directory?(File.join(built, "deps"))

    FileUtils.mkdir_p(GEM_TARGET)
    run!({}, "cp", "-a", built, GEM_TARGET)
    "reusing the dependencies rake compile built"
  end

  it "builds, installs into a fresh GEM_HOME, loads from there and runs a workflow" do
    Dir.mktmpdir("tasker_gem") do |dir|
      gem_file = File.join(dir, "tasker_core.gem")
      home = File.join(dir, "home")
      env = { "GEM_HOME" => home, "GEM_PATH" => home, "RUBYOPT" => nil, "RUBYLIB" => nil, "BUNDLE_GEMFILE" => nil,
              "CARGO_TARGET_DIR" => GEM_TARGET, "TASKER_LOG" => "error" }
      run!(env, "gem", "build", "tasker_core.gemspec", "--output", gem_file)
      how = prepare_gem_target
      seconds = elapsed { run!(env, "gem", "install", "--local", "--no-document", "--install-dir", home, gem_file) }
      puts format("\n  source gem install (cargo builds the extension into tmp/gem-target, %s): %.1f s", how, seconds)

      script = <<~RUBY
        require "tasker_core"
        so = $LOADED_FEATURES.grep(/tasker_core\\.so\\z/).first
        raise "extension loaded from \#{so}, not the temporary GEM_HOME" unless so.start_with?(ENV["GEM_HOME"])
        gem_dir = Gem.loaded_specs.fetch("tasker_core").full_gem_path
        require File.join(gem_dir, "workers/ruby/examples/handlers")
        TaskerCore.configure do |c|
          c.database_url = ENV.fetch("SPEC_DATABASE_URL")
          c.environment = "test"
          c.template_path = File.join(gem_dir, "config/tasks")
        end
        TaskerCore::Worker.start(namespaces: ["linear_workflow"], concurrency: 2, orchestration: :embedded)
        task = TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math",
                                              version: "1.0.0", context: { "value" => 6 })
        task = TaskerCore::Client.wait(task, timeout: 30)
        TaskerCore::Worker.stop
        puts "RESULT \#{task.status} \#{task.step('minus_one').result}"
      RUBY
      out = run!(env.merge("SPEC_DATABASE_URL" => TaskerSpec::TestDatabase.url), RbConfig.ruby, "-e", script,
                 chdir: dir)
      expect(out).to include("RESULT complete 575")
    end
  end

  # Built by `rake gem:native` (a prerequisite of spec:slow).
  it "installs as the native gem with no cargo or clang on PATH, in seconds, and runs a workflow" do
    gem_file = File.join(ROOT, "pkg/tasker_core-#{TaskerCore::VERSION}-#{Gem::Platform.local}.gem")
    expect(File).to exist(gem_file)
    Dir.mktmpdir("tasker_native_gem") do |dir|
      # A PATH holding only ruby and gem: no cargo, rustc or clang.
      bin = File.join(dir, "bin")
      FileUtils.mkdir_p(bin)
      File.symlink(RbConfig.ruby, File.join(bin, "ruby"))
      File.symlink(File.join(RbConfig::CONFIG["bindir"], "gem"), File.join(bin, "gem"))
      home = File.join(dir, "home")
      env = { "PATH" => bin, "GEM_HOME" => home, "GEM_PATH" => home, "RUBYOPT" => nil, "RUBYLIB" => nil,
              "BUNDLE_GEMFILE" => nil, "TASKER_LOG" => "error" }
      seconds = elapsed do
        run!(env, File.join(bin, "gem"), "install", "--local", "--no-document", gem_file, chdir: dir)
      end
      # A figure for the README, not a pass/fail threshold: timings are not asserted.
      puts format("\n  native gem install, no cargo or clang on PATH: %.2f s", seconds)

      script = <<~RUBY
        require "tasker_core"
        so = $LOADED_FEATURES.grep(/tasker_core\\.so\\z/).first
        raise "extension loaded from \#{so}" unless so.start_with?(ENV["GEM_HOME"])
        gem_dir = Gem.loaded_specs.fetch("tasker_core").full_gem_path
        require File.join(gem_dir, "workers/ruby/examples/handlers")
        TaskerCore.configure do |c|
          c.database_url = ENV.fetch("SPEC_DATABASE_URL")
          c.environment = "test"
          c.template_path = File.join(gem_dir, "config/tasks")
        end
        TaskerCore::Worker.start(namespaces: ["linear_workflow"], concurrency: 2, orchestration: :embedded)
        task = TaskerCore::Client.wait(TaskerCore::Client.create_task(namespace: "linear_workflow", name: "linear_math",
                                                                      version: "1.0.0", context: { "value" => 6 }), timeout: 30)
        TaskerCore::Worker.stop
        puts "RESULT \#{task.status} \#{task.step('minus_one').result}"
      RUBY
      out = run!(env.merge("SPEC_DATABASE_URL" => TaskerSpec::TestDatabase.url), File.join(bin, "ruby"), "-e", script,
                 chdir: dir)
      expect(out).to include("RESULT complete 575")
    end
  end
end
