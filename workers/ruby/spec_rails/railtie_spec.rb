# frozen_string_literal: true

require "rails_helper"

RSpec.describe TaskerCore::RailsDatabase do
  let(:yml) do
    { adapter: "postgresql", host: "db.internal", port: 5433, username: "app", password: "p@ss/w",
      database: "app_production" }
  end

  it "takes DATABASE_URL first" do
    expect(described_class.resolve(env: { "DATABASE_URL" => "postgresql://env/db" }, active_record: yml,
                                   configured: "postgresql://configured/db")).to eq("postgresql://env/db")
  end

  it "else builds the URL from the app's Active Record configuration" do
    expect(described_class.resolve(env: {}, active_record: yml, configured: "postgresql://configured/db"))
      .to eq("postgresql://app:p%40ss%2Fw@db.internal:5433/app_production")
  end

  it "else takes config.tasker.database_url" do
    expect(described_class.resolve(env: { "DATABASE_URL" => "" }, active_record: nil,
                                   configured: "postgresql://configured/db")).to eq("postgresql://configured/db")
    mysql = { adapter: "mysql2", database: "app" }
    expect(described_class.resolve(env: {}, active_record: mysql, configured: "postgresql://c/db"))
      .to eq("postgresql://c/db")
  end

  it "keeps a url from database.yml, and a socket directory as ?host=" do
    expect(described_class.url_from(adapter: "postgresql", url: "postgres://u@h/d")).to eq("postgres://u@h/d")
    expect(described_class.url_from("adapter" => "postgresql", "host" => "/var/run/postgresql", "database" => "d"))
      .to eq("postgresql:///d?host=%2Fvar%2Frun%2Fpostgresql")
    expect(described_class.url_from(adapter: "postgresql", database: "d", sslmode: "require"))
      .to eq("postgresql:///d?sslmode=require")
  end
end

RSpec.describe TaskerCore::Railtie do
  it "configures Tasker from the booted app: its database.yml, Rails.env, Rails.logger, its templates" do
    url = URI(TaskerSpec::TestDatabase.url)
    expect(TaskerCore.configuration.database_url)
      .to eq("postgresql://#{url.user}@#{url.host}:#{url.port}#{url.path}")
    expect(TaskerCore.configuration.environment).to eq("test")
    expect(TaskerCore.logger).to be(Rails.logger)
    expect(TaskerCore.configuration.template_paths)
      .to eq([File.join(RailsSpec::APP_ROOT, "config/tasker/templates"), TaskerCore::ActiveJobTasks::TEMPLATE_DIR])
  end

  it "starts no worker by itself" do
    expect(RailsSpec::WORKER_RUNNING_AFTER_BOOT).to be(false)
  end

  it "adds the tasker:* rake tasks, each loading the app first" do
    Rails.application.load_tasks
    %w[tasker:setup tasker:migrate tasker:templates:validate tasker:worker].each do |name|
      expect(Rake::Task[name].prerequisites).to include("environment")
    end
  end
end

RSpec.describe "handlers in a Rails app" do
  def run(name)
    TaskerCore::Testing.run_task(namespace: "rails_spec", name: name, version: "1.0.0", context: {}, timeout: 20)
  end

  before(:context) { require "tasker_core/testing" }

  # Ten handler threads share a pool of five connections with a two-second checkout
  # timeout: a handler that kept its connection would starve the others.
  it "gives each handler's Active Record connection back: 200 calls leave the pool as they found it" do
    run("query")
    pool = ActiveRecord::Base.connection_pool
    # Compared by holder, not by count: a thread of an earlier example may still hold a
    # connection when the run starts and give it back during it, which a count would take
    # for a change. A handler thread keeping its connection is a holder the run adds.
    # This thread's own connection (the row below takes one if it has none) is held in both.
    holders = -> { pool.connections.select(&:in_use?).map(&:owner) }
    Widget.create!(name: "counted")
    pool.reap
    before = holders.call
    tasks = Array.new(200) do
      TaskerCore::Client.create_now("namespace" => "rails_spec", "name" => "query", "version" => "1.0.0",
                                    "context" => {})
    end
    results = tasks.map { |t| TaskerCore::Client.wait(t, timeout: 60) }
    expect(results.map(&:status).tally).to eq("complete" => 200)
    expect(results.map { |t| t.step("query").result }.uniq).to eq([Widget.count])
    pool.reap
    expect(holders.call - before).to eq([])
    expect(pool.stat[:waiting]).to eq(0)
    expect(pool.stat[:connections]).to be <= pool.size
  ensure
    Widget.delete_all
  end

  it "runs the new code after a handler's file changes (reloading)" do
    expect(run("reload").step("answer").result).to eq("first")
    file = File.join(RailsSpec::APP_ROOT, "app/handlers/rails_spec/answer_handler.rb")
    # Rails' file watcher ignores modification times in the future: the rewrite's own one counts.
    File.write(file, File.read(file).sub('"first"', '"second"'))
    expect(run("reload").step("answer").result).to eq("second")
  end
end
