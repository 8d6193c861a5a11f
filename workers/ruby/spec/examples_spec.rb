# frozen_string_literal: true

require "spec_helper"
require_relative "../examples/expectations"

# Every example template in config/tasks through the Ruby worker and embedded
# orchestration, with the results the Rust end-to-end tests expect.
RSpec.describe "example workflows on the Ruby worker" do
  before(:context) { start_worker }
  after(:context) { TaskerCore::Worker.stop(timeout: 5) }

  it "covers every example template" do
    on_disk = TaskerCore::Templates.load([File.join(ROOT, "config/tasks")]).map { |t| [t.namespace, t.name] }
    expect(Examples::CASES.map { |c| [c[:namespace], c[:name]] }).to match_array(on_disk)
  end

  it "ends every example as the Rust worker does" do
    tasks = Examples::CASES.map do |c|
      TaskerCore::Client.create_task(namespace: c[:namespace], name: c[:name], version: "1.0.0", context: c[:context])
    end
    outcomes = Examples::CASES.zip(tasks).to_h do |c, task|
      ["#{c[:namespace]}/#{c[:name]}", Examples.mismatches(c, TaskerCore::Client.wait(task, timeout: 30))]
    end
    expect(outcomes.reject { |_, problems| problems.empty? }).to eq({})
  end
end
