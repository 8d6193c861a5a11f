# frozen_string_literal: true

require "spec_helper"
require "open3"
require "rbconfig"
require "timeout"

# A script whose main thread is its only thread: the extension starts one idle thread
# ("tasker-signal") at its first GVL-free call, so that Ruby 3.1 does not start and kill a
# helper thread around every call, and signals and deadlocks behave as in any Ruby program.
RSpec.describe "a single-threaded Ruby process calling the extension" do
  # Runs `body` in a fresh Ruby process; yields its output stream and wait thread.
  def ruby_script(body, &block)
    script = "$LOAD_PATH.unshift(#{File.join(ROOT, "workers/ruby/lib").inspect})\n" \
             "require \"tasker_core\"\n$stdout.sync = true\n#{body}"
    Open3.popen2e({ "TASKER_LOG" => "error" }, RbConfig.ruby, "-e", script) do |stdin, out, wait|
      stdin.close
      block.call(out, wait)
    end
  end

  it "gets one idle signal thread, once, whatever the number of calls" do
    ruby_script(<<~RUBY) do |out, wait|
      ch = TaskerCore::Native::LoopbackChannel.new
      puts Thread.list.map(&:name).inspect
      3.times { ch.poll(0.01) }
      puts Thread.list.map(&:name).inspect
    RUBY
      status = Timeout.timeout(30) { wait.value }
      expect(out.read.lines.map(&:chomp)).to eq(["[nil]", '[nil, "tasker-signal"]'])
      expect(status.exitstatus).to eq(0)
    end
  end

  it "is interrupted by SIGINT while the main thread waits without the GVL" do
    ruby_script(<<~RUBY) do |out, wait|
      ch = TaskerCore::Native::LoopbackChannel.new
      puts "ready"
      begin
        ch.poll(60)
        puts "poll returned"
      rescue Interrupt
        puts "interrupted"
      end
    RUBY
      Timeout.timeout(30) { expect(out.gets).to eq("ready\n") }
      sleep 0.5
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      Process.kill("INT", wait.pid)
      status = Timeout.timeout(30) { wait.value }
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 5
      expect(out.read).to eq("interrupted\n")
      expect(status.exitstatus).to eq(0)
    end
  end

  it "does not hide a deadlock of the program's own threads" do
    ruby_script(<<~RUBY) do |out, wait|
      TaskerCore::Native::LoopbackChannel.new.poll(0.01)
      Queue.new.pop
    RUBY
      status = Timeout.timeout(30) { wait.value }
      expect(out.read).to include("No live threads left. Deadlock?")
      expect(status.exitstatus).not_to eq(0)
    end
  end

  it "gives a forked child its own signal thread" do
    ruby_script(<<~RUBY) do |out, wait|
      TaskerCore::Native::LoopbackChannel.new.poll(0.01)
      pid = fork do
        before = Thread.list.map(&:name)
        TaskerCore::Native::LoopbackChannel.new.poll(0.01)
        puts [before, Thread.list.map(&:name)].inspect
      end
      Process.wait(pid)
    RUBY
      status = Timeout.timeout(30) { wait.value }
      expect(out.read.chomp).to eq('[[nil], [nil, "tasker-signal"]]')
      expect(status.exitstatus).to eq(0)
    end
  end
end
