# frozen_string_literal: true

require "spec_helper"
require "rake"
require "stringio"
require "tmpdir"
require "tasker_core/rake_support"

RSpec.describe "tasker rake tasks" do
  before(:context) do
    Rake.application = Rake::Application.new
    load File.join(ROOT, "workers/ruby/lib/tasker_core/rake_tasks.rb")
  end

  def run_task(name)
    out = StringIO.new
    original = [$stdout, $stderr]
    $stdout = $stderr = out
    Rake::Task[name].reenable
    Rake::Task[name].invoke
    out.string
  ensure
    $stdout, $stderr = original
  end

  it "defines the documented tasks" do
    expect(Rake::Task.tasks.map(&:name))
      .to include("tasker:setup", "tasker:migrate", "tasker:templates:validate", "tasker:worker", "tasker:demo")
  end

  it "validates the templates on the template path" do
    out = run_task("tasker:templates:validate")
    template = File.join(ROOT, "config/tasks/order_fulfillment.yaml")
    expect(out).to include("ok    #{template} (ecommerce/order_fulfillment@1.0.0)")
    expect(out).to match(/\d+ template\(s\) valid/)
  end

  it "reports every invalid template and fails" do
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "bad.yaml"), "name: x\nnamespace: Bad-NS\nversion: 1.0.0\nsteps: []\n")
      TaskerCore.configuration.template_path = [dir]
      expect { run_task("tasker:templates:validate") }.to raise_error(SystemExit)
    ensure
      TaskerSpec.configure_tasker
    end
  end

  it "sets up the database: migrate and register the templates" do
    use_database
    out = run_task("tasker:setup")
    expect(out).to include("migrated, PGMQ installed")
    expect(out).to match(%r{(registered|unchanged) +ecommerce/order_fulfillment@1.0.0})
  end

  it "runs the order-fulfillment demo end to end" do
    use_database
    out = run_task("tasker:demo")
    expect(out).to match(%r{ecommerce/order_fulfillment@1.0.0: complete})
    expect(out).to include('ship_order         complete  attempts=1 result={"charge_id":"ch_42"')
  ensure
    TaskerSpec.configure_tasker
  end
end

RSpec.describe TaskerCore::RakeTasks do
  it "requires the handler files and directories named in HANDLERS" do
    Dir.mktmpdir do |dir|
      File.write(File.join(dir, "one.rb"), "module RakeSpecHandlers; ONE = 1; end\n")
      Dir.mkdir(File.join(dir, "more"))
      File.write(File.join(dir, "more", "two.rb"), "module RakeSpecHandlers; TWO = 2; end\n")
      described_class.load_handlers("#{File.join(dir, "one.rb")}:#{File.join(dir, "more")}")
      expect([RakeSpecHandlers::ONE, RakeSpecHandlers::TWO]).to eq([1, 2])
    end
  end
end
