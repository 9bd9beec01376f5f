"""The Gaussian diffusion of improved DDPM (Nichol & Dhariwal, 2021; openai/improved-diffusion):
the cosine noise schedule, a learned (interpolated) variance, and the L_hybrid objective.

The schedule and the sampler are diffusers' ``DDPMScheduler`` (``squaredcos_cap_v2`` betas,
``learned_range`` variance, ``linspace`` respacing, x0 clipped to [-1, 1] while sampling):
respacing 4000 training steps to 250 takes improved-diffusion's timesteps
(``round(linspace(0, 3999, 250))``) and recomputes the betas between them as it does.
diffusers has no variational bound, so the training terms are written here, in float64
coefficients taken from the scheduler's betas:

- the model predicts ``eps`` and ``v`` (6 channels for RGB); the variance is
  ``exp(frac log beta_t + (1 - frac) log beta~_t)`` with ``frac = (v + 1) / 2`` and beta~ the
  posterior variance (clipped at t = 0 to its value at t = 1, as improved-diffusion does);
- ``L_t`` (bits per dimension): the KL divergence of q(x_{t-1} | x_t, x_0) from
  p(x_{t-1} | x_t) for t > 0; for t = 0 the negative log-likelihood of x_0 under the Gaussian
  decoder discretised to 256 bins;
- ``L_hybrid = L_simple + lambda * T * L_t`` for a uniformly drawn t (the paper's
  ``L_simple + lambda L_vlb`` with ``L_vlb = sum_t L_t``; improved-diffusion writes
  ``vb * num_timesteps / 1000`` for lambda = 0.001), the vlb term seeing the predicted mean
  through a stop-gradient so it only trains the variance.

One deviation: the decoder's normal CDF is exact (``torch.special.ndtr``) where
improved-diffusion uses a tanh approximation (|error| < 2e-4); it enters one timestep in 4000.
"""

import math

BINS_HALF_WIDTH = 1.0 / 255.0  # pixels in [-1, 1] with 256 levels: bins of width 2/255
# improved-diffusion clamps every pixel's probability at 1e-12 before the log, edge bins included.
LOG_PROBABILITY_FLOOR = math.log(1e-12)


def scheduler(num_timesteps: int):
    """diffusers' DDPMScheduler configured as improved DDPM (cosine betas, learned range)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=num_timesteps,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        prediction_type="epsilon",
        clip_sample=True,
        clip_sample_range=1.0,
        timestep_spacing="linspace",
    )


def mean_flat(tensor):
    return tensor.mean(dim=tuple(range(1, tensor.ndim)))


def normal_kl(mean_1, log_variance_1, mean_2, log_variance_2):
    """KL(N(mean_1, exp(log_variance_1)) || N(mean_2, exp(log_variance_2))), elementwise, in nats."""
    import torch

    return 0.5 * (
        -1.0 + log_variance_2 - log_variance_1 + torch.exp(log_variance_1 - log_variance_2)
        + (mean_1 - mean_2) ** 2 * torch.exp(-log_variance_2)
    )


def discretized_gaussian_log_likelihood(x, mean, log_scale):
    """log P(x) of pixels x in [-1, 1] (256 levels) under N(mean, exp(log_scale)^2) integrated
    over each pixel's bin; the edge bins extend to -inf and +inf. Elementwise, in nats, at least
    LOG_PROBABILITY_FLOOR for every pixel (as improved-diffusion's losses.py)."""
    import torch
    from torch.special import log_ndtr, ndtr

    inverse_scale = torch.exp(-log_scale)
    upper = inverse_scale * (x - mean + BINS_HALF_WIDTH)
    lower = inverse_scale * (x - mean - BINS_HALF_WIDTH)
    # Each branch is floored on its own, before any log of 0: torch.where passes gradients through
    # the branches it does not select too, and an infinite one would make them NaN.
    log_below_upper = log_ndtr(upper).clamp(min=LOG_PROBABILITY_FLOOR)
    log_above_lower = log_ndtr(-lower).clamp(min=LOG_PROBABILITY_FLOOR)
    log_in_bin = torch.log((ndtr(upper) - ndtr(lower)).clamp(min=math.exp(LOG_PROBABILITY_FLOOR)))
    return torch.where(x < -0.999, log_below_upper, torch.where(x > 0.999, log_above_lower, log_in_bin))


class GaussianDiffusion:
    """The training terms of a diffusion with the given betas (1-D, float64 internally)."""

    def __init__(self, betas):
        import torch

        betas = torch.as_tensor(betas, dtype=torch.float64).cpu()
        self.num_timesteps = len(betas)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / alphas_cumprod - 1.0).sqrt()
        # beta~_0 is 0; like improved-diffusion, use beta~_1 there so its log stays finite.
        self.posterior_log_variance_clipped = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod)
        self.log_betas = betas.log()

    @classmethod
    def from_scheduler(cls, ddpm_scheduler):
        return cls(ddpm_scheduler.betas)

    @staticmethod
    def extract(coefficients, t, like):
        """coefficients[t] as a (B, 1, 1, 1) tensor of ``like``'s dtype and device."""
        values = coefficients[t.cpu()].to(device=like.device, dtype=like.dtype)
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x_start, t, noise):
        """x_t ~ q(x_t | x_0) for the given noise."""
        return (self.extract(self.sqrt_alphas_cumprod, t, x_start) * x_start
                + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def q_posterior(self, x_start, x_t, t):
        """(mean, log variance) of q(x_{t-1} | x_t, x_0)."""
        mean = (self.extract(self.posterior_mean_coef1, t, x_t) * x_start
                + self.extract(self.posterior_mean_coef2, t, x_t) * x_t)
        return mean, self.extract(self.posterior_log_variance_clipped, t, x_t).expand_as(x_t)

    def p_mean_variance(self, model_output, x_t, t):
        """(mean, log variance, predicted x_0) of p(x_{t-1} | x_t) from the model's [eps, v]."""
        eps, v = model_output.split(x_t.shape[1], dim=1)
        fraction = (v + 1.0) / 2.0
        log_variance = (fraction * self.extract(self.log_betas, t, x_t)
                        + (1.0 - fraction) * self.extract(self.posterior_log_variance_clipped, t, x_t))
        x_start = (self.extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                   - self.extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)
        mean, _ = self.q_posterior(x_start, x_t, t)
        return mean, log_variance, x_start

    def vlb_terms(self, model_output, x_start, x_t, t):
        """L_t per sample in bits per dimension: KL for t > 0, decoder NLL for t = 0."""
        import torch

        true_mean, true_log_variance = self.q_posterior(x_start, x_t, t)
        mean, log_variance, _ = self.p_mean_variance(model_output, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / math.log(2.0)
        decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, mean, 0.5 * log_variance)) / math.log(2.0)
        return torch.where(t == 0, decoder_nll, kl)

    def hybrid_loss(self, model_output, x_start, x_t, t, noise, vlb_weight: float):
        """(loss, mse, vlb) per sample: loss = mse(eps) + vlb_weight * T * L_t, L_t computed with
        the predicted mean detached (it trains only the variance)."""
        import torch

        eps, v = model_output.split(x_t.shape[1], dim=1)
        mse = mean_flat((noise - eps) ** 2)
        vlb = self.vlb_terms(torch.cat([eps.detach(), v], dim=1), x_start, x_t, t)
        return mse + vlb_weight * self.num_timesteps * vlb, mse, vlb
