// orbithil compute chip: UART host link, frame engine and command executor, register file
// (TMR when HARDEN=1), SECDED data SRAM with scrubber, int8 MAC engine (DMR when HARDEN=1),
// watchdog, counters. Interface: fpga/ICD.md. Sized for an iCE40 UP5K.
`default_nettype none
`include "orbithil_icd.vh"
module orbithil_chip #(
    parameter integer HARDEN = 1,
    parameter integer CLKS_PER_BIT = 104,      // 12 MHz / 115200 baud
    parameter integer MEM_WORDS = 2048,
    parameter integer ENERGY_PER_CYCLE = 1,    // energy units per MAC-engine cycle
    parameter integer BUILD = 1,
    parameter integer FEC = 1,                // link forward error correction (ICD)
    parameter integer INJECT = 1,             // 0: no INJECT command nor flip logic (flight)
    parameter integer MEM_SPRAM = 0           // 1: data SRAM in the UP5K's SPRAM (board)
) (
    input  wire       clk,
    input  wire       rst,
    input  wire       uart_rx,
    output wire       uart_tx,
    output wire [2:0] led
);
    localparam integer AW = $clog2(MEM_WORDS);
    localparam [7:0] ICD8 = `OH_ICD_VERSION;
    localparam [7:0] BUILD8 = BUILD;
    localparam [0:0] HARDEN_BIT = HARDEN != 0;
    localparam [0:0] FEC_BIT = FEC != 0;
    localparam [0:0] INJECT_BIT = INJECT != 0;

    // --- resets: external, soft (SOFT_RESET command), engines (watchdog) ---------------
    wire soft_reset;
    reg  soft_reset_q;
    wire wdt_fire;
    wire rst_all = rst || soft_reset_q;
    wire rst_engines = rst_all || wdt_fire;
    always @(posedge clk) soft_reset_q <= rst ? 1'b0 : soft_reset;

    // --- UART and frames ------------------------------------------------------------
    wire [7:0] rx_byte;
    wire       rx_valid, rx_frame_err;
    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_uart_rx (
        .clk(clk), .rst(rst_engines), .rx(uart_rx), .data(rx_byte), .valid(rx_valid),
        .frame_err(rx_frame_err));

    wire [7:0] tx_byte;
    wire       tx_start, tx_line_busy;
    uart_tx #(.CLKS_PER_BIT(CLKS_PER_BIT)) u_uart_tx (
        .clk(clk), .rst(rst_engines), .data(tx_byte), .start(tx_start), .tx(uart_tx),
        .busy(tx_line_busy));

    wire       exec_busy, fr_done, fr_fec, fr_vpar, rx_rpar_err;
    wire [1:0] fec_fixed;
    wire [7:0] fr_status, fr_seq, fr_cmd, rx_rdata;
    wire [8:0] fr_len, rx_raddr;
    frame_rx #(.FEC(FEC), .PARITY(HARDEN)) u_frame_rx (
        .clk(clk), .rst(rst_engines), .in_data(rx_byte), .in_valid(rx_valid), .hold(exec_busy),
        .raddr(rx_raddr), .rdata(rx_rdata), .rpar_err(rx_rpar_err), .done(fr_done),
        .status(fr_status), .body_len(fr_len), .seq(fr_seq), .cmd(fr_cmd), .fec(fr_fec),
        .vpar(fr_vpar), .fec_fixed(fec_fixed));

    wire [8:0] tx_waddr, tx_base, tx_len;
    wire [7:0] tx_wdata;
    wire       tx_we, tx_wpar, tx_send, tx_busy, tx_par_err;
    frame_tx #(.FEC(FEC), .PARITY(HARDEN)) u_frame_tx (
        .clk(clk), .rst(rst_engines), .waddr(tx_waddr), .wdata(tx_wdata), .wpar(tx_wpar),
        .we(tx_we), .send(tx_send), .base(tx_base), .len(tx_len), .busy(tx_busy),
        .par_err(tx_par_err), .out_data(tx_byte), .out_start(tx_start),
        .out_busy(tx_line_busy));

    // --- register file -------------------------------------------------------------
    wire [7:0]  reg_addr;
    wire [31:0] reg_wdata;
    wire        reg_we, reg_inj;
    wire [4:0]  reg_inj_bit;
    wire [1:0]  reg_inj_copy;
    wire [32*`OH_RW_COUNT-1:0] rw_values;
    wire        tmr_mismatch;
    reg  [3:0]  rw_index;
    reg         is_rw;
    always @* begin
        is_rw = 1'b1;
        case (reg_addr)
            `OH_REG_SCRUB_PERIOD: rw_index = `OH_RW_SCRUB_PERIOD;
            `OH_REG_WDT_TIMEOUT:  rw_index = `OH_RW_WDT_TIMEOUT;
            `OH_REG_INJ_ARM:      rw_index = `OH_RW_INJ_ARM;
            `OH_REG_SCRATCH0:     rw_index = `OH_RW_SCRATCH0;
            `OH_REG_SCRATCH1:     rw_index = `OH_RW_SCRATCH1;
            default: begin rw_index = 4'd0; is_rw = 1'b0; end
        endcase
    end
    regfile_tmr #(.HARDEN(HARDEN), .INJECT(INJECT)) u_regs (
        .clk(clk), .rst(rst_all), .we(reg_we && is_rw), .windex(rw_index), .wdata(reg_wdata),
        .inj(reg_inj), .inj_index(rw_index), .inj_bit(reg_inj_bit), .inj_copy(reg_inj_copy),
        .values(rw_values), .mismatch(tmr_mismatch));
    wire [31:0] scrub_period = rw_values[32*`OH_RW_SCRUB_PERIOD +: 32];
    wire [31:0] wdt_timeout  = rw_values[32*`OH_RW_WDT_TIMEOUT +: 32];
    wire [31:0] inj_arm      = rw_values[32*`OH_RW_INJ_ARM +: 32];
    wire        armed = INJECT != 0 && inj_arm == `OH_INJECT_ARM_MAGIC;
    wire        kick = reg_we && reg_addr == `OH_REG_WDT_KICK;
    wire        clear_flags = reg_we && reg_addr == `OH_REG_CTRL && reg_wdata[0];

    // --- memory and MAC engine -----------------------------------------------------
    wire          exec_mem_req, exec_mem_we, mem_inj, mac_req, mac_we, mem_ack;
    wire [AW-1:0] exec_mem_addr, mac_addr;
    wire [31:0]   exec_mem_wdata, mac_wdata, mem_rdata;
    wire [1:0]    mem_rstatus;
    wire [5:0]    mem_inj_bit;
    wire [15:0]   ecc_corrected, ecc_uncorrectable;
    wire [AW-1:0] ecc_last_addr;
    wire          mac_busy, job_done, mac_retry, job_start;
    wire [7:0]    job_status, job_rows, job_cols;
    wire [31:0]   job_cycles;
    wire [15:0]   job_w, job_x, job_y;
    secded_mem #(.HARDEN(HARDEN), .WORDS(MEM_WORDS), .AW(AW), .INJECT(INJECT),
                 .MEM_SPRAM(MEM_SPRAM)) u_mem (
        .clk(clk), .rst(rst_all),
        .req(mac_busy ? mac_req : exec_mem_req), .we(mac_busy ? mac_we : exec_mem_we),
        .addr(mac_busy ? mac_addr : exec_mem_addr),
        .wdata(mac_busy ? mac_wdata : exec_mem_wdata),
        .ack(mem_ack), .rdata(mem_rdata), .rstatus(mem_rstatus),
        .inj(mem_inj), .inj_addr(exec_mem_addr), .inj_bit(mem_inj_bit),
        .scrub_period(scrub_period), .corrected(ecc_corrected),
        .uncorrectable(ecc_uncorrectable), .last_addr(ecc_last_addr), .ue_event(ecc_ue_event));
    mac_engine #(.HARDEN(HARDEN), .AW(AW)) u_mac (
        .clk(clk), .rst(rst_all), .start(job_start), .stop(wdt_fire), .w_addr(job_w),
        .x_addr(job_x), .y_addr(job_y), .rows(job_rows), .cols(job_cols), .busy(mac_busy),
        .done(job_done), .status(job_status), .cycles(job_cycles), .retry(mac_retry),
        .req(mac_req), .we(mac_we), .addr(mac_addr), .wdata(mac_wdata), .ack(mem_ack),
        .rdata(mem_rdata), .rstatus(mem_rstatus));

    // --- counters, flags, watchdog ---------------------------------------------------
    // Event counters that campaigns compare before/after are 16-bit and saturate (a wrap
    // to 0 would read as "nothing happened"); uptime, frames and energy are 32-bit.
    reg [31:0] uptime, last_job_cycles, energy, frames_ok;
    reg [15:0] job_count, frames_bad, mac_retries, tmr_mismatches, fec_corrected, parity_errors;
    wire [15:0] wdt_expiries;
    reg        flag_job_done, flag_job_error, flag_wdt, flag_ue;
    wire       frame_ok, frame_bad, ecc_ue_event, parity_err;
    wire       wdt_reload = reg_we && reg_addr == `OH_REG_WDT_TIMEOUT;
    watchdog u_wdt (
        .clk(clk), .rst(rst_all), .timeout(wdt_timeout), .kick(kick), .reload(wdt_reload),
        .fire(wdt_fire), .expiries(wdt_expiries));

    always @(posedge clk) begin
        if (rst_all) begin
            uptime <= 0; job_count <= 0; last_job_cycles <= 0; energy <= 0; frames_ok <= 0;
            frames_bad <= 0; mac_retries <= 0; tmr_mismatches <= 0; fec_corrected <= 0;
            parity_errors <= 0;
            flag_job_done <= 1'b0; flag_job_error <= 1'b0; flag_wdt <= 1'b0;
            flag_ue <= 1'b0;
        end else begin
            uptime <= uptime + 1'b1;
            if (frame_ok) frames_ok <= frames_ok + 1'b1;
            if (frame_bad && ~&frames_bad) frames_bad <= frames_bad + 1'b1;
            if (mac_retry && ~&mac_retries) mac_retries <= mac_retries + 1'b1;
            if (fec_corrected > 16'hFFFF - fec_fixed) fec_corrected <= 16'hFFFF;
            else fec_corrected <= fec_corrected + fec_fixed;
            if (parity_err && ~&parity_errors) parity_errors <= parity_errors + 1'b1;
            if (tmr_mismatch && ~&tmr_mismatches) tmr_mismatches <= tmr_mismatches + 1'b1;
            if (job_done) begin
                if (~&job_count) job_count <= job_count + 1'b1;
                last_job_cycles <= job_cycles;
                energy <= energy + job_cycles * ENERGY_PER_CYCLE;
                flag_job_done <= 1'b1;
                if (job_status != 0) flag_job_error <= 1'b1;
            end
            if (ecc_ue_event) flag_ue <= 1'b1;
            if (clear_flags) begin
                flag_job_done <= 1'b0; flag_job_error <= 1'b0; flag_wdt <= 1'b0;
                flag_ue <= 1'b0;
            end
            if (wdt_fire) flag_wdt <= 1'b1;
        end
    end
    wire [31:0] status_word = {26'h0, armed, flag_ue, flag_wdt, flag_job_error, flag_job_done,
                               mac_busy};

    // --- register read mux -----------------------------------------------------------
    reg [31:0] reg_rdata;
    reg        readable, writable;
    always @* begin
        readable = 1'b1;
        writable = 1'b0;
        reg_rdata = 32'h0;
        case (reg_addr)
            `OH_REG_ID:                reg_rdata = `OH_CHIP_ID;
            `OH_REG_BUILD:             reg_rdata = {ICD8, 13'h0, INJECT_BIT, FEC_BIT, HARDEN_BIT,
                                                     BUILD8};
            `OH_REG_MEM_WORDS:         reg_rdata = MEM_WORDS;
            `OH_REG_STATUS:            reg_rdata = status_word;
            `OH_REG_UPTIME:            reg_rdata = uptime;
            `OH_REG_JOB_COUNT:         reg_rdata = {16'h0, job_count};
            `OH_REG_JOB_CYCLES:        reg_rdata = last_job_cycles;
            `OH_REG_ENERGY:            reg_rdata = energy;
            `OH_REG_ECC_CORRECTED:     reg_rdata = {16'h0, ecc_corrected};
            `OH_REG_ECC_UNCORRECTABLE: reg_rdata = {16'h0, ecc_uncorrectable};
            `OH_REG_ECC_LAST_ADDR:     reg_rdata = {{(32-AW){1'b0}}, ecc_last_addr};
            `OH_REG_TMR_MISMATCH:      reg_rdata = {16'h0, tmr_mismatches};
            `OH_REG_FRAMES_OK:         reg_rdata = frames_ok;
            `OH_REG_FRAMES_BAD:        reg_rdata = {16'h0, frames_bad};
            `OH_REG_MAC_RETRIES:       reg_rdata = {16'h0, mac_retries};
            `OH_REG_WDT_EXPIRIES:      reg_rdata = {16'h0, wdt_expiries};
            `OH_REG_FEC_CORRECTED:     reg_rdata = {16'h0, fec_corrected};
            `OH_REG_PARITY_ERRORS:     reg_rdata = {16'h0, parity_errors};
            `OH_REG_CTRL, `OH_REG_WDT_KICK: writable = 1'b1;  // write-only strobes read 0
            default: if (is_rw) begin
                reg_rdata = rw_values[32*rw_index +: 32];
                writable = 1'b1;
            end else readable = 1'b0;
        endcase
    end

    cmd_exec #(.HARDEN(HARDEN), .MEM_WORDS(MEM_WORDS), .AW(AW), .FEC(FEC), .PARITY(HARDEN),
               .INJECT(INJECT)) u_exec (
        .clk(clk), .rst(rst_engines),
        .fr_done(fr_done), .fr_status(fr_status), .fr_len(fr_len), .fr_seq(fr_seq),
        .fr_cmd(fr_cmd), .fr_fec(fr_fec), .fr_vpar(fr_vpar), .rx_raddr(rx_raddr),
        .rx_rdata(rx_rdata), .rx_rpar_err(rx_rpar_err), .busy(exec_busy),
        .tx_waddr(tx_waddr), .tx_wdata(tx_wdata), .tx_wpar(tx_wpar), .tx_we(tx_we),
        .tx_send(tx_send), .tx_base(tx_base), .tx_len(tx_len), .tx_busy(tx_busy),
        .tx_par_err(tx_par_err),
        .reg_addr(reg_addr), .reg_rdata(reg_rdata), .reg_readable(readable),
        .reg_writable(writable), .reg_is_rw(is_rw), .reg_we(reg_we), .reg_wdata(reg_wdata),
        .reg_inj(reg_inj), .reg_inj_bit(reg_inj_bit), .reg_inj_copy(reg_inj_copy),
        .mem_req(exec_mem_req), .mem_we(exec_mem_we), .mem_addr(exec_mem_addr),
        .mem_wdata(exec_mem_wdata), .mem_ack(mem_ack), .mem_rdata(mem_rdata),
        .mem_rstatus(mem_rstatus), .mem_inj(mem_inj), .mem_inj_bit(mem_inj_bit),
        .job_start(job_start), .job_w(job_w), .job_x(job_x), .job_y(job_y),
        .job_rows(job_rows), .job_cols(job_cols), .job_done(job_done),
        .job_status(job_status), .job_cycles(job_cycles), .armed(armed),
        .frame_ok(frame_ok), .frame_bad(frame_bad), .parity_err(parity_err),
        .soft_reset(soft_reset));

    assign led = {flag_ue | flag_wdt | flag_job_error, mac_busy, uptime[23]};
endmodule
